// The `redact` plugin (issue "Reliability and security": no personal data at rest): removes e-mail
// addresses, long tokens and JWTs, and the values of configured query keys from every stored string a
// client controls: pathname, referrer, UTM values and props (free-text fields of the Lynkow dialect
// included). Runs in `enrich` after `referrer` and before `sessions`, so session rows inherit the
// redacted values.

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'
import { createRedactor } from './redactor.ts'

export default definePlugin({
  name: 'redact',
  stage: 'enrich',
  summary: 'Removes e-mail addresses, tokens and secret query values from stored URLs, paths, referrers and props.',
  options: Type.Object(
    {
      emails: Type.Boolean({ default: true, description: 'Replace e-mail addresses (also %40-encoded) with [email].' }),
      tokens: Type.Boolean({
        default: true,
        description: 'Replace JWTs and long runs of letters and digits (API keys, session ids) with [token].',
      }),
      minTokenLength: Type.Integer({
        minimum: 16,
        default: 32,
        description: 'Shortest run of [A-Za-z0-9_-] mixing letters and digits that counts as a token.',
      }),
      queryKeys: Type.Array(Type.String({ minLength: 1 }), {
        default: [
          'token',
          'access_token',
          'id_token',
          'auth',
          'key',
          'api_key',
          'apikey',
          'password',
          'pass',
          'secret',
          'email',
          'code',
          'session',
          'sid',
        ],
        description:
          'Query keys whose values are replaced with [redacted] wherever a URL is stored (props such as url).',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options) {
    const redact = createRedactor(options)
    return {
      run(event) {
        event.pathname = redact(event.pathname)
        event.referrer = redact(event.referrer)
        event.utm_source = redact(event.utm_source)
        event.utm_medium = redact(event.utm_medium)
        event.utm_campaign = redact(event.utm_campaign)
        event.utm_content = redact(event.utm_content)
        event.utm_term = redact(event.utm_term)
        const props = event.props
        for (const key in props) props[key] = redact(props[key]!)
        return undefined
      },
    }
  },
})
