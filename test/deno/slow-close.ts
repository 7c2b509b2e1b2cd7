// A custom plugin (loaded by path) whose close takes a while: it holds shutdown open between "Shutting
// down" and the sinks' flush, so a test can send a second signal while shutdown is surely running.

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'

export default definePlugin({
  name: 'slow-close',
  stage: 'enrich',
  summary: 'Does nothing to events; takes closeMs to close.',
  options: Type.Object(
    { closeMs: Type.Integer({ minimum: 0, default: 500, description: 'How long close() takes.' }) },
    { additionalProperties: false },
  ),
  setup(options) {
    return {
      run: () => undefined,
      close: () => new Promise<void>((done) => setTimeout(done, options.closeMs)),
    }
  },
})
