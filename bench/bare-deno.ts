// The limit for Deno: a bare Deno.serve that reads the body, parses the JSON and answers 202.
// Usage: deno run -A bench/bare-deno.ts PORT

declare const Deno: {
  args: string[]
  serve(
    options: { port: number; hostname: string; onListen?: () => void },
    handler: (r: Request) => Promise<Response>,
  ): unknown
}

const port = Number(Deno.args[0] ?? 18001)
Deno.serve({ port, hostname: '127.0.0.1', onListen: () => {} }, async (request) => {
  try {
    JSON.parse(await request.text())
  } catch {
    return new Response('bad json', { status: 400 })
  }
  return new Response('ok', { status: 202, headers: { 'access-control-allow-origin': '*' } })
})
console.error(`bare Deno.serve listening on ${port}`)

export {}
