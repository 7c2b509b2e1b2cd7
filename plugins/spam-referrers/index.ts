// Implements spec/plausible-dialect.md §7: a referrer whose host (trimmed, one `www.` removed) is on
// the spam list drops the event (`spam_referrer`), for every domain of the request.

import { join } from 'node:path'
import { Type } from '@sinclair/typebox'
import { ConfigError, definePlugin } from '../../core/plugin.ts'
import { referrerHost } from './hosts.ts'
import { isUrl, type ListSource, SpamLists } from './lists.ts'

/** The list Plausible uses too (plausible/referrer-blocklist); public domain. */
export const MATOMO_SPAMMERS_URL = 'https://raw.githubusercontent.com/matomo-org/referrer-spam-list/master/spammers.txt'

export default definePlugin({
  name: 'spam-referrers',
  stage: 'classify',
  summary: 'Drops events whose referrer host is on a spam list (files or URLs in Matomo spammers.txt format).',
  drops: {
    spam_referrer:
      'the referrer host, trimmed and with one leading www. removed, is exactly a host on one of the lists',
  },
  options: Type.Object(
    {
      lists: Type.Array(Type.String({ minLength: 1 }), {
        default: [MATOMO_SPAMMERS_URL],
        description:
          'Host lists, one host per line: file paths (relative to the config file) or http(s) URLs. ' +
          'URLs are fetched in the background and their last good copy is kept under the state folder.',
        examples: [['./spammers.txt', MATOMO_SPAMMERS_URL]],
      }),
      refreshHours: Type.Integer({
        minimum: 1,
        default: 168,
        description: 'How often lists are re-fetched (URLs) or re-read (files); a failed fetch retries within an hour.',
      }),
      fetchTimeoutSeconds: Type.Integer({
        minimum: 1,
        default: 30,
        description: 'How long one download of a URL list may take before it counts as failed.',
      }),
    },
    { additionalProperties: false },
  ),
  async setup(options, engine) {
    const sources: ListSource[] = options.lists.map((name) => ({
      kind: isUrl(name) ? 'url' : 'file',
      name,
      location: isUrl(name) ? name : engine.resolvePath(name),
    }))
    const lists = new SpamLists({
      sources,
      copyDir: join(engine.stateDir, 'spam-referrers'),
      refreshMs: options.refreshHours * 3600_000,
      fetchTimeoutMs: options.fetchTimeoutSeconds * 1000,
      logger: engine.logger,
    })
    const problems = await lists.load()
    const first = problems[0]
    if (first) {
      const index = sources.indexOf(first.source)
      throw new ConfigError(`lists[${index}]`, `cannot read the list ${first.source.location}: ${first.error}`)
    }
    await lists.start()
    const stop = () => lists.stop()
    engine.onClose(stop)
    return {
      run(event, ctx) {
        if (event.referrerUrl === '') return undefined
        return lists.hosts.has(referrerHost(event.referrerUrl)) ? ctx.drop('spam_referrer') : undefined
      },
      // SIGHUP: re-read every file and every URL's copy on disk now; a file that became unreadable
      // keeps the hosts it had.
      async reload() {
        for (const problem of await lists.load()) {
          engine.logger.warn('A spam referrer list could not be re-read; it keeps its previous hosts.', {
            list: problem.source.location,
            error: problem.error,
          })
        }
      },
      close: stop,
    }
  },
})
