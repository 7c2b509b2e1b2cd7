// "Machines" for tests: Linux network namespaces made by the test, with private addresses that exist
// only on the links it made (research/scale-out.md §4, setup notes). No netem and no iptables here, so
// a partition is a link set down.
//
//   root namespace (the test, Redis)           machine i (namespace <id>-m<i>)
//   bridge <id>b  10.213.R.1/25  ── veth ──    back0   10.213.R.(11+i)/25   (Redis, shared state)
//   <id>f<i>      10.213.R.(129+4i)/30 ─────   front0  10.213.R.(130+4i)/30 (clients; never cut)
//
// R is chosen per run among the /24s of 10.213.0.0/16 that no interface uses. Every name carries the
// test process's id, so two runs never collide, and what a killed run left behind is removed by the
// next one (its process is gone).

import { spawnSync } from 'bun'

const PREFIX = 'ant'

export interface Machine {
  readonly index: number
  /** The namespace's name. */
  readonly ns: string
  /** Its address on the back network (towards Redis). */
  readonly backIp: string
  /** Its address on its front link; clients in the root namespace reach it there. */
  readonly frontIp: string
  /** The root namespace's end of the front link (the clients' source address). */
  readonly frontPeerIp: string
  /** `ip netns exec <ns>`: run a command in this machine. */
  readonly exec: string[]
}

export interface Network {
  /** The bridge's address: services in the root namespace listen here. */
  readonly hostIp: string
  /** The /24 of this run. */
  readonly subnet: string
  readonly machines: Machine[]
  /** Takes the machine's back link down (its side stays up, so it sees no carrier). */
  cut(machine: Machine): void
  heal(machine: Machine): void
  destroy(): void
}

function ip(args: string[], allowFailure = false): string {
  const run = spawnSync(['ip', ...args], { stdout: 'pipe', stderr: 'pipe' })
  if (run.exitCode !== 0 && !allowFailure) {
    throw new Error(`ip ${args.join(' ')}: ${run.stderr.toString().trim()}`)
  }
  return run.stdout.toString()
}

/** Whether this process may make namespaces: root, and `ip netns` works. Says why not. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root'
  const run = spawnSync(['ip', 'netns', 'list'], { stdout: 'ignore', stderr: 'pipe' })
  if (run.exitCode !== 0) return `ip netns does not work: ${run.stderr.toString().trim()}`
  return undefined
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Removes namespaces and links of earlier runs whose process is gone. */
function removeLeftovers(): void {
  const owner = new RegExp(`^${PREFIX}(\\d+)`)
  for (const line of ip(['netns', 'list'], true).split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const pid = owner.exec(name)?.[1]
    if (pid !== undefined && !alive(Number(pid))) ip(['netns', 'delete', name], true)
  }
  for (const line of ip(['-o', 'link', 'show'], true).split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1] ?? ''
    const pid = owner.exec(name)?.[1]
    if (pid !== undefined && !alive(Number(pid))) ip(['link', 'delete', name], true)
  }
}

/** A /24 of 10.213.0.0/16 that no interface of the root namespace has an address in. */
function freeSubnet(): string {
  const used = ip(['-4', '-o', 'addr', 'show'])
  for (let attempt = 0; attempt < 256; attempt++) {
    const r = Math.floor(Math.random() * 256)
    if (!used.includes(` 10.213.${r}.`)) return `10.213.${r}`
  }
  throw new Error('no free /24 in 10.213.0.0/16')
}

/** Makes `count` machines (at most 30) on a fresh bridge; `destroy()` removes everything. */
export function createNetwork(count: number): Network {
  removeLeftovers()
  const id = `${PREFIX}${process.pid}`
  const subnet = freeSubnet()
  const bridge = `${id}b`
  const machines: Machine[] = []
  const made: { namespaces: string[]; links: string[] } = { namespaces: [], links: [] }
  const destroy = () => {
    // Deleting a namespace deletes its ends of the veth pairs, and with them the root ends.
    for (const ns of made.namespaces) ip(['netns', 'delete', ns], true)
    for (const link of made.links) ip(['link', 'delete', link], true)
  }
  try {
    ip(['link', 'add', bridge, 'type', 'bridge'])
    made.links.push(bridge)
    ip(['addr', 'add', `${subnet}.1/25`, 'dev', bridge])
    ip(['link', 'set', bridge, 'up'])
    for (let i = 0; i < count; i++) {
      const ns = `${id}-m${i + 1}`
      ip(['netns', 'add', ns])
      made.namespaces.push(ns)
      ip(['-n', ns, 'link', 'set', 'lo', 'up'])
      const back = `${id}k${i + 1}`
      ip(['link', 'add', back, 'type', 'veth', 'peer', 'name', 'back0', 'netns', ns])
      made.links.push(back)
      ip(['link', 'set', back, 'master', bridge, 'up'])
      const backIp = `${subnet}.${11 + i}`
      ip(['-n', ns, 'addr', 'add', `${backIp}/25`, 'dev', 'back0'])
      ip(['-n', ns, 'link', 'set', 'back0', 'up'])
      const front = `${id}f${i + 1}`
      ip(['link', 'add', front, 'type', 'veth', 'peer', 'name', 'front0', 'netns', ns])
      made.links.push(front)
      const frontPeerIp = `${subnet}.${129 + 4 * i}`
      const frontIp = `${subnet}.${130 + 4 * i}`
      ip(['addr', 'add', `${frontPeerIp}/30`, 'dev', front])
      ip(['link', 'set', front, 'up'])
      ip(['-n', ns, 'addr', 'add', `${frontIp}/30`, 'dev', 'front0'])
      ip(['-n', ns, 'link', 'set', 'front0', 'up'])
      machines.push({ index: i, ns, backIp, frontIp, frontPeerIp, exec: ['ip', 'netns', 'exec', ns] })
    }
  } catch (error) {
    destroy()
    throw error
  }
  return {
    hostIp: `${subnet}.1`,
    subnet,
    machines,
    cut: (m) => void ip(['link', 'set', `${id}k${m.index + 1}`, 'down']),
    heal: (m) => void ip(['link', 'set', `${id}k${m.index + 1}`, 'up']),
    destroy,
  }
}
