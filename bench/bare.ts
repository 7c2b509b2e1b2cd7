// The limit for this runtime: a bare Bun.serve that reads the body, parses the JSON and answers 202.
// Usage: bun bench/bare.ts PORT

const port = Number(process.argv[2] ?? 18000)
Bun.serve({
  port,
  hostname: '127.0.0.1',
  async fetch(request) {
    try {
      JSON.parse(await request.text())
    } catch {
      return new Response('bad json', { status: 400 })
    }
    return new Response('ok', { status: 202, headers: { 'access-control-allow-origin': '*' } })
  },
})
process.stderr.write(`bare Bun.serve listening on ${port}\n`)

export {}
