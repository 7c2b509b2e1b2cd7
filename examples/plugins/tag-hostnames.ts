// An example of a user's own plugin: tags events from a set of hostnames with a prop, so a dashboard
// can filter staging or partner traffic. Referenced from a config by its path:
//
//   plugins:
//     - ./plugins/tag-hostnames.ts: { hostnames: [staging.example.com], prop: env, value: staging }

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'

export default definePlugin({
  name: 'tag-hostnames',
  stage: 'enrich',
  summary: 'Adds a prop to events whose hostname is in a list; optionally drops the rest.',
  drops: { untagged_hostname: 'the hostname is not in the list and onlyTagged is on' },
  options: Type.Object(
    {
      hostnames: Type.Array(Type.String({ minLength: 1 }), {
        minItems: 1,
        description: 'Hostnames to tag, compared case-insensitively.',
        examples: [['staging.example.com', 'preview.example.com']],
      }),
      prop: Type.String({ minLength: 1, default: 'tag', description: 'The prop key to set.' }),
      value: Type.String({ minLength: 1, default: 'tagged', description: 'The prop value to set.' }),
      onlyTagged: Type.Boolean({ default: false, description: 'Drop events from every other hostname.' }),
    },
    { additionalProperties: false },
  ),
  setup(options) {
    // Lower-case once here, so run() is one Set lookup.
    const hostnames = new Set(options.hostnames.map((h) => h.toLowerCase()))
    return {
      run(event, ctx) {
        if (hostnames.has(event.hostname.toLowerCase())) {
          event.props[options.prop] = options.value
          return undefined
        }
        return options.onlyTagged ? ctx.drop('untagged_hostname') : undefined
      },
    }
  },
})
