// A throwaway ClickHouse cluster for tests: one ZooKeeper (Debian's `zookeeper` jars run with java, as in
// research/scale-out.md §2.1) and two ClickHouse 18.16 servers forming one shard of two replicas
// (remote_servers with internal_replication, macros {shard}/{replica}, distributed DDL), each on free
// ports with a temporary folder. Every member can be killed, stopped and started again on its ports.
//
//   const cluster = await startCluster()      // undefined (and a loud warning) when a binary is missing
//   await cluster.replicas[0].kill(); await cluster.zookeeper.kill(); await cluster.zookeeper.start()
//   await cluster.destroy()

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Subprocess, spawn } from 'bun'
import { type ClickHouseServer, clickhouseBinary, freePort, startClickHouse, warnIfNoClickHouse } from './harness.ts'

const ZK_JARS = ['zookeeper.jar', 'zookeeper-jute.jar', 'slf4j-api.jar', 'slf4j-log4j12.jar', 'log4j-1.2.jar'].map(
  (jar) => `/usr/share/java/${jar}`,
)
const java = Bun.which('java')

/** Whether ZooKeeper can run here: java and the Debian `zookeeper` package's jars. */
export const zookeeperAvailable: boolean = java !== null && ZK_JARS.every((jar) => existsSync(jar))

/** Whether the cluster tests can run: ZooKeeper and a ClickHouse server binary. */
export const clusterAvailable: boolean = zookeeperAvailable && clickhouseBinary !== undefined

let warned = false
/** Says loudly, once per process, that the cluster tests are skipped. Call it at the top of a test file. */
export function warnIfNoCluster(): void {
  warnIfNoClickHouse()
  if (zookeeperAvailable || warned) return
  warned = true
  console.warn(
    '\n*** ZooKeeper not found (java and the Debian `zookeeper` package, /usr/share/java/zookeeper.jar): ' +
      'ClickHouse cluster tests are SKIPPED. Install it with `apt-get install -y zookeeper`. ***\n',
  )
}

const live = new Set<Subprocess>()
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL')
})

export interface ZooKeeper {
  readonly port: number
  readonly running: boolean
  /** Starts it again on the same port and data. */
  start(): Promise<void>
  /** SIGKILL: a crash. */
  kill(): Promise<void>
  destroy(): Promise<void>
}

/** `ruok` → `imok` when the server serves requests. */
function ruok(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let answer = ''
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1000, () => done(false))
    socket.on('connect', () => socket.write('ruok'))
    socket.on('data', (data) => {
      answer += data.toString()
    })
    socket.on('end', () => done(answer === 'imok'))
    socket.on('error', () => done(false))
  })
}

/** Starts a standalone ZooKeeper 3.8 on a free port with a temporary data folder. */
export async function startZooKeeper(): Promise<ZooKeeper> {
  if (!java) throw new Error('java is not installed')
  const javaBin = java
  const dir = mkdtempSync(join(tmpdir(), 'zookeeper-test-'))
  const port = await freePort()
  mkdirSync(join(dir, 'data'))
  writeFileSync(
    join(dir, 'zoo.cfg'),
    [
      'tickTime=2000',
      `dataDir=${dir}/data`,
      `clientPort=${port}`,
      'clientPortAddress=127.0.0.1',
      'admin.enableServer=false',
      '4lw.commands.whitelist=ruok',
      // A test cluster is small: snapshot often enough to keep restarts quick.
      'snapCount=10000',
    ].join('\n'),
  )
  writeFileSync(
    join(dir, 'log4j.properties'),
    [
      'log4j.rootLogger=WARN, FILE',
      'log4j.appender.FILE=org.apache.log4j.FileAppender',
      `log4j.appender.FILE.File=${dir}/zookeeper.log`,
      'log4j.appender.FILE.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n',
    ].join('\n'),
  )
  let proc: Subprocess | undefined
  let alive = false

  const start = async (): Promise<void> => {
    if (alive) return
    const started = spawn(
      [
        javaBin,
        '-Xmx256m',
        '-XX:+UseSerialGC',
        '-cp',
        [dir, ...ZK_JARS].join(':'),
        'org.apache.zookeeper.server.quorum.QuorumPeerMain',
        join(dir, 'zoo.cfg'),
      ],
      { cwd: dir, stdout: 'ignore', stderr: 'ignore' },
    )
    proc = started
    alive = true
    live.add(started)
    void started.exited.then(() => {
      live.delete(started)
      if (proc === started) alive = false
    })
    const deadline = Date.now() + 30_000
    while (!(await ruok(port))) {
      if (!alive) throw new Error(`ZooKeeper exited with ${started.exitCode}; see ${dir}/zookeeper.log`)
      if (Date.now() > deadline) throw new Error(`ZooKeeper did not answer ruok within 30 s; see ${dir}`)
      await Bun.sleep(50)
    }
  }

  const kill = async (): Promise<void> => {
    if (!proc || !alive) return
    proc.kill('SIGKILL')
    await proc.exited
    alive = false
  }

  await start()
  return {
    port,
    get running() {
      return alive
    },
    start,
    kill,
    async destroy() {
      await kill()
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
    },
  }
}

/**
 * Waits until the server has its ZooKeeper session. 18.16 answers /ping before that, and a distributed
 * DDL it receives meanwhile can crash it (seen here: SIGSEGV in zkutil::ZooKeeper::createImpl).
 */
export async function waitForZooKeeper(server: ClickHouseServer, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      await server.query("SELECT count() FROM system.zookeeper WHERE path = '/'")
      return
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`no ZooKeeper session within ${ms} ms: ${String(error)}`)
    }
    await Bun.sleep(100)
  }
}

export interface Cluster {
  /** The name in remote_servers: one shard, two replicas, internal_replication. */
  readonly name: string
  readonly zookeeper: ZooKeeper
  /** Replica r1 and replica r2 of shard 01. */
  readonly replicas: readonly [ClickHouseServer, ClickHouseServer]
  destroy(): Promise<void>
}

/**
 * Starts ZooKeeper and two replicas, or returns undefined (after a warning) when a binary is missing.
 * The servers start in parallel (~2 s each on 18.16).
 */
export async function startCluster(name = 'analytics'): Promise<Cluster | undefined> {
  if (!clusterAvailable) {
    warnIfNoCluster()
    return undefined
  }
  const zookeeper = await startZooKeeper()
  const ports = await Promise.all(
    [0, 1].map(async () => ({ http: await freePort(), tcp: await freePort(), interserver: await freePort() })),
  )
  const replicaXml = ports.map((p) => `<replica><host>127.0.0.1</host><port>${p.tcp}</port></replica>`).join('')
  const servers = await Promise.allSettled(
    ports.map((p, i) =>
      startClickHouse({
        httpPort: p.http,
        tcpPort: p.tcp,
        // One request per connection: a stopped server otherwise keeps serving a busy keep-alive
        // connection for many seconds (engine-faults.test.ts).
        extraConfig: `
  <keep_alive_timeout>0</keep_alive_timeout>
  <interserver_http_port>${p.interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <remote_servers><${name}><shard><internal_replication>true</internal_replication>${replicaXml}</shard></${name}></remote_servers>
  <zookeeper><node index="1"><host>127.0.0.1</host><port>${zookeeper.port}</port></node><session_timeout_ms>10000</session_timeout_ms></zookeeper>
  <macros><shard>01</shard><replica>r${i + 1}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>`,
        // The distributed DDL worker runs with the default profile, not the session's settings
        // (scale-out.md §2.1 #18): LowCardinality columns need the setting here on 18.16.
        profileSettings: '<allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>',
      }),
    ),
  )
  const started = servers.flatMap((s) => (s.status === 'fulfilled' && s.value ? [s.value] : []))
  const failed = servers.find((s) => s.status === 'rejected')
  if (failed || started.length !== 2) {
    await Promise.all(started.map((s) => s.destroy()))
    await zookeeper.destroy()
    throw failed?.status === 'rejected' ? failed.reason : new Error('a ClickHouse replica did not start')
  }
  const replicas = started as [ClickHouseServer, ClickHouseServer]
  await Promise.all(replicas.map((r) => waitForZooKeeper(r)))
  return {
    name,
    zookeeper,
    replicas,
    async destroy() {
      await Promise.all(replicas.map((r) => r.destroy()))
      await zookeeper.destroy()
    },
  }
}
