// The `props` plugin: Plausible's custom-property rules (spec/plausible-dialect.md §4) as a module
// that dialects call while they parse, because an over-long prop must fail the request with a 400
// before any event exists. The plugin itself adds no step to the pipeline.

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'

export {
  hasAmbiguousValue,
  INVALID_JSON,
  isAmbiguousNumber,
  isJsonObject,
  jsonInteger,
  jsonIntegerText,
  parseJson,
  RawNumber,
} from '../../core/json.ts'
export { exceedsBytes, isBlank, isWhitespace, trimEndWhitespace, trimWhitespace, utf8Length } from '../../core/text.ts'
export { formatElixirFloat } from './float.ts'
export {
  decodeProps,
  MAX_KEY_BYTES,
  MAX_PROPS,
  MAX_VALUE_BYTES,
  PATH_PROP_EVENTS,
  PROPS_TOO_LONG,
  PROPS_TOO_LONG_MESSAGE,
  propText,
  sanitiseProps,
} from './sanitise.ts'

export default definePlugin({
  name: 'props',
  stage: 'enrich',
  summary: "Plausible's custom-property rules, applied by the dialects while they parse; no pipeline step.",
  options: Type.Object({}, { additionalProperties: false }),
  // No `run`: by the time the pipeline runs, `event.props` is already sanitised (or the request was
  // refused), and a second pass would only cost time.
  setup: () => ({}),
})
