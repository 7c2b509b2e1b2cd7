// The compiled pipeline (design.md "The plugin contract"): every `run` of the configured plugins in
// one flat array, ordered by the stage table and, within a stage, by config order. Synchronous steps
// run in a plain loop; a promise is made only when an async plugin returns one.

import type { DropCounters } from './drop-counters.ts'
import type { AnalyticsEvent } from './event.ts'
import type { Logger } from './logger.ts'
import type { Metrics } from './metrics.ts'
import type { Drop, PluginContext, PluginInstance, RunResult, Stage } from './plugin.ts'
import type { SinkInstance } from './sink.ts'

export const PLUGIN_ERROR = 'plugin_error'
/** The prop a plugin in `mode: report` sets instead of dropping: the first reason wins. */
export const WOULD_DROP_PROP = 'would_drop'

export interface Step {
  /** The plugin's name, for logs and `check`. */
  name: string
  stage: Stage
  /** The plugin's `run` bound to its instance, for callers off the request path. */
  run: NonNullable<PluginInstance['run']>
  /**
   * The same `run` unbound, with its instance: the pipeline calls `method.call(instance, …)`, which
   * the JIT makes a plain call, where calling a bound function goes through a trampoline (measured
   * in-process: 14 steps 330-370 ns bound, 75-180 ns with `call`).
   */
  method: NonNullable<PluginInstance['run']>
  instance: PluginInstance
  ctx: PluginContext
  async: boolean
  /** `mode: report`: a drop tags the event and counts as would_drop; the event goes on. */
  report: boolean
}

/** What `verdict` returns for a step in report mode: not a drop, the event goes on. */
const REPORTED = Symbol('reported')

const PLUGIN_ERROR_DROP: Drop = Object.freeze({ kind: 'drop', reason: PLUGIN_ERROR, plugin: 'core' })

export class Pipeline {
  /** Whether any step reports instead of dropping: then `would_drop` is the engine's key alone. */
  private readonly reporting: boolean
  /**
   * The first step after the identify stage. The steps before it keep no state, so a worker of
   * `serve --workers` runs them to learn a request's client IP, hence its owner (core/workers/).
   */
  readonly ownerStep: number

  constructor(
    readonly steps: readonly Step[],
    private readonly sinks: readonly { name: string; instance: SinkInstance }[],
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    /** Per-site, per-minute counts for sinks that store them; absent when no sink does. */
    private readonly counters?: DropCounters,
  ) {
    this.reporting = steps.some((s) => s.report)
    const after = steps.findIndex((s) => s.stage !== 'parse' && s.stage !== 'identify')
    this.ownerStep = after < 0 ? steps.length : after
  }

  /**
   * Runs the events in order; one outcome per event (`undefined` = accepted). `starts`: the step
   * each event starts at, when some already went through the steps before `ownerStep` (`runPrefix`).
   */
  process(events: AnalyticsEvent[], starts?: readonly number[]): RunResult[] | Promise<RunResult[]> {
    const outcomes: RunResult[] = new Array(events.length)
    for (let i = 0; i < events.length; i++) {
      const outcome = this.processOne(events[i]!, starts === undefined ? 0 : starts[i]!)
      if (outcome instanceof Promise) return this.finishAsync(events, outcomes, i, outcome, starts)
      outcomes[i] = outcome
    }
    return outcomes
  }

  processOne(event: AnalyticsEvent, from = 0): RunResult | Promise<RunResult> {
    // A client must not hide a verdict, or fake one, by sending the tag itself.
    if (from === 0 && this.reporting && event.props[WOULD_DROP_PROP] !== undefined) delete event.props[WOULD_DROP_PROP]
    const steps = this.steps
    for (let i = from; i < steps.length; i++) {
      const step = steps[i]!
      let result: RunResult | Promise<RunResult>
      try {
        result = step.method.call(step.instance, event, step.ctx)
      } catch (error) {
        return this.fault(event, step, error)
      }
      if (result === undefined || result === null) continue
      if (result instanceof Promise) return this.continueAsync(event, i, result)
      const drop = this.verdict(event, step, result)
      if (drop !== REPORTED) return drop
    }
    this.accept(event)
    return undefined
  }

  /**
   * Runs the steps before `ownerStep` on one event and counts nothing: true when every one let it go
   * on, false when one dropped or threw (then the event is processed again from the start, where the
   * verdict is counted once).
   */
  runPrefix(event: AnalyticsEvent): boolean | Promise<boolean> {
    if (this.reporting && event.props[WOULD_DROP_PROP] !== undefined) delete event.props[WOULD_DROP_PROP]
    const steps = this.steps
    for (let i = 0; i < this.ownerStep; i++) {
      const step = steps[i]!
      let result: RunResult | Promise<RunResult>
      try {
        result = step.method.call(step.instance, event, step.ctx)
      } catch {
        return false
      }
      if (result instanceof Promise) return this.runPrefixAsync(event, i, result)
      if (result !== undefined && result !== null) return false
    }
    return true
  }

  private async runPrefixAsync(event: AnalyticsEvent, index: number, pending: Promise<RunResult>): Promise<boolean> {
    try {
      if ((await pending) != null) return false
      for (let i = index + 1; i < this.ownerStep; i++) {
        const step = this.steps[i]!
        if ((await step.run(event, step.ctx)) != null) return false
      }
      return true
    } catch {
      return false
    }
  }

  /** Counts a drop decided outside the pipeline (by a dialect: unknown site, …). */
  recordDrop(event: AnalyticsEvent, drop: Drop): void {
    this.metrics.drop(drop.reason, event.site?.label ?? 'other')
    this.counters?.add(event.timestamp, event.site?.id ?? 0, drop.reason, false)
  }

  private async continueAsync(event: AnalyticsEvent, index: number, pending: Promise<RunResult>): Promise<RunResult> {
    const steps = this.steps
    let step = steps[index]!
    try {
      let result = await pending
      for (;;) {
        if (result !== undefined && result !== null) {
          const drop = this.verdict(event, step, result)
          if (drop !== REPORTED) return drop
        }
        index++
        if (index >= steps.length) break
        step = steps[index]!
        result = await step.run(event, step.ctx)
      }
    } catch (error) {
      return this.fault(event, step, error)
    }
    this.accept(event)
    return undefined
  }

  private async finishAsync(
    events: AnalyticsEvent[],
    outcomes: RunResult[],
    index: number,
    pending: Promise<RunResult>,
    starts: readonly number[] | undefined,
  ): Promise<RunResult[]> {
    outcomes[index] = await pending
    for (let i = index + 1; i < events.length; i++) {
      outcomes[i] = await this.processOne(events[i]!, starts === undefined ? 0 : starts[i]!)
    }
    return outcomes
  }

  /** The drop to answer with, or REPORTED when the step only reports and the event goes on. */
  private verdict(event: AnalyticsEvent, step: Step, result: unknown): Drop | typeof REPORTED {
    const drop = result as Drop
    if (drop.kind !== 'drop') return this.fault(event, step, new TypeError('run returned something other than a drop'))
    if (step.report) {
      if (event.props[WOULD_DROP_PROP] === undefined) event.props[WOULD_DROP_PROP] = drop.reason
      this.metrics.wouldDrop(drop.reason, event.site?.label ?? 'other')
      this.counters?.add(event.timestamp, event.site?.id ?? 0, drop.reason, true)
      return REPORTED
    }
    this.metrics.drop(drop.reason, event.site?.label ?? 'other')
    this.counters?.add(event.timestamp, event.site?.id ?? 0, drop.reason, false)
    return drop
  }

  private fault(event: AnalyticsEvent, step: Step, error: unknown): Drop {
    this.metrics.drop(PLUGIN_ERROR, event.site?.label ?? 'other')
    this.counters?.add(event.timestamp, event.site?.id ?? 0, PLUGIN_ERROR, false)
    // The message may quote request data: cut it, and log once per interval per plugin.
    const { name, detail } = describeThrown(error)
    this.logger.throttled(`plugin_error:${step.name}`, 'error', 'A plugin threw on an event; the event was dropped.', {
      plugin: step.name,
      error: name,
      detail,
    })
    return PLUGIN_ERROR_DROP
  }

  private accept(event: AnalyticsEvent): void {
    this.metrics.accept(event.site?.label ?? 'other')
    for (const sink of this.sinks) {
      try {
        sink.instance.write(event)
      } catch (error) {
        this.logger.throttled(`sink_write:${sink.name}`, 'error', 'A sink refused an event.', {
          sink: sink.name,
          error: (error as Error).message?.slice(0, 200),
        })
      }
    }
  }
}

/**
 * A name and a short message for anything a plugin may throw: an Error, a string, `null`, an object
 * without a prototype or with a throwing toString. Describing the fault must never fault itself.
 */
export function describeThrown(error: unknown): { name: string; detail: string } {
  try {
    if (error instanceof Error) {
      const message = typeof error.message === 'string' ? error.message : '(no message)'
      return { name: typeof error.name === 'string' ? error.name : 'Error', detail: message.slice(0, 200) }
    }
    return { name: typeof error, detail: String(error).slice(0, 200) }
  } catch {
    return { name: typeof error, detail: '(cannot be described)' }
  }
}
