// The JSON Schema of the whole config file, for editors (`schema` command): the core's keys plus,
// for each built-in plugin and sink, the `{ name: options }` form with that component's own schema.

import { builtinPlugins } from '../plugins/registry.ts'
import { builtinSinks } from '../sinks/registry.ts'
import { ConfigSchema, canReport } from './config.ts'
import type { PluginDefinition } from './plugin.ts'

type Json = Record<string, unknown>

/** Drops TypeBox's symbol keys and functions by a JSON round trip. */
function plain(schema: unknown): Json {
  return JSON.parse(JSON.stringify(schema)) as Json
}

async function componentItems(
  registry: Record<string, () => Promise<{ default: { options: unknown; summary?: string } }>>,
) {
  const names = Object.keys(registry)
  const forms: Json[] = [{ type: 'string', description: 'A built-in by name, or a path to your own module.' }]
  for (const name of names) {
    const def = (await registry[name]!()).default
    const options = plain(def.options)
    // The core takes `mode` out of the options of plugins that drop inside the pipeline.
    if ('stage' in def && canReport(def as PluginDefinition)) {
      options.properties = {
        ...(options.properties as Json),
        mode: {
          enum: ['drop', 'report'],
          default: 'drop',
          description: 'report: tag the event with the would_drop prop and keep it instead of dropping it.',
        },
      }
    }
    forms.push({
      type: 'object',
      description: def.summary,
      properties: { [name]: options },
      required: [name],
      additionalProperties: false,
    })
  }
  forms.push({
    type: 'object',
    description: 'Your own module by path (./my-plugin.ts) with its options.',
    patternProperties: { '^(\\.|/).*': { type: 'object' } },
    minProperties: 1,
    maxProperties: 1,
    additionalProperties: false,
  })
  return { anyOf: forms }
}

export async function configJsonSchema(): Promise<Json> {
  const schema = plain(ConfigSchema)
  const pluginItems = await componentItems(builtinPlugins)
  const sinkItems = await componentItems(builtinSinks)
  const patch = (props: Json) => {
    if (props.plugins) (props.plugins as Json).items = pluginItems
    if (props.sinks) (props.sinks as Json).items = sinkItems
  }
  const props = schema.properties as Json
  patch(props)
  const envs = props.environments as Json | undefined
  const envProps = ((envs?.patternProperties as Json | undefined) ?? {}) as Record<string, Json>
  for (const value of Object.values(envProps)) patch(value.properties as Json)
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'analytics ingest engine config',
    ...schema,
  }
}
