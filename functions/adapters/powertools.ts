/** Powertools-backed telemetry for the Lambda functions (JSON logs, EMF metrics in namespace Sluice). */
import { Logger } from '@aws-lambda-powertools/logger';
import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';

interface DimensionedCount {
  readonly name: string;
  readonly dimensions: Readonly<Record<string, string>>;
  value: number;
}

/**
 * The dimensioned counts of each Metrics instance's invocation, by metric and dimensions,
 * until `publishMetrics` writes them. A dimension set of its own needs an EMF document of
 * its own (Powertools' singleMetric), and written at each count that is a log line per
 * delivery attempt, per delayed delivery, per turn: summed here, an invocation writes one
 * per metric and dimension values, however many records its batch had.
 */
const dimensionedCounts = new WeakMap<Metrics, Map<string, DimensionedCount>>();

/**
 * Counts written the moment they are counted, not when the invocation ends: each alarms
 * on its own (deliveries-dead-lettered, events-rejected-or-dropped, webhook-disabled), and each
 * follows a write the record's second run finds done and does not count again (a dead
 * letter's key, a drop's receipt, a held count's overflow, a webhook's disabled state).
 * Counted at the end, Lambda killing the invocation after the write (its timeout, out
 * of memory) lost the page for good. They are rare, so the extra EMF line costs little;
 * `EventsRejected`, which a flood counts on every request, is left to the end (an API
 * invocation is one request, and the write it follows is a refusal, done again on retry).
 */
const PUBLISHED_AT_ONCE: ReadonlySet<string> = new Set(['DeadLetters', 'EventsDropped', 'EventsHeldOverflow', 'WebhooksDisabled']);

export function metricsPort(metrics: Metrics): MetricsPort {
  return {
    seconds(name, value) {
      metrics.addMetric(name, MetricUnit.Seconds, value);
    },
    // Always the plain metric (what alarms watch), plus a dimensioned copy when
    // dimensions are given (what dashboards break down by), written by publishMetrics.
    count(name, value = 1, dimensions) {
      metrics.addMetric(name, MetricUnit.Count, value);
      if (PUBLISHED_AT_ONCE.has(name)) metrics.publishStoredMetrics();
      if (dimensions && Object.keys(dimensions).length > 0) {
        if (PUBLISHED_AT_ONCE.has(name)) {
          // Its dimensioned copy out at once too: an alarm may read one reason alone
          // (events-rejected-or-dropped reads EventsDropped's retention drops).
          publishDimensioned(metrics, { name, dimensions, value });
          return;
        }
        const counts = dimensionedCounts.get(metrics) ?? new Map<string, DimensionedCount>();
        dimensionedCounts.set(metrics, counts);
        const key = JSON.stringify([name, Object.entries(dimensions).sort(([a], [b]) => a.localeCompare(b))]);
        const counted = counts.get(key);
        if (counted) counted.value += value;
        else counts.set(key, { name, dimensions: { ...dimensions }, value });
      }
    },
  };
}

/**
 * Publishes what an invocation counted (its dimensioned counts summed, see
 * dimensionedCounts), and nothing when it counted nothing: Powertools
 * writes a warning on every publish of no metrics, and one per invocation (every stream
 * poll and read of the API, every idle doorbell, every call to the canary's public
 * receiver) would fill a function's logs, and bury its own warnings, at CloudWatch Logs' price.
 */
export function publishMetrics(metrics: Metrics): void {
  const counts = dimensionedCounts.get(metrics);
  dimensionedCounts.delete(metrics);
  for (const count of counts?.values() ?? []) publishDimensioned(metrics, count);
  if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
}

/** Writes one dimensioned count as an EMF document of its own (Powertools writes a single metric at once). */
function publishDimensioned(metrics: Metrics, { name, dimensions, value }: DimensionedCount): void {
  const single = metrics.singleMetric();
  for (const [dimension, dimensionValue] of Object.entries(dimensions)) single.addDimension(dimension, dimensionValue);
  single.addMetric(name, MetricUnit.Count, value);
}

export function loggerPort(logger: Logger): LoggerPort {
  return {
    info: (message, fields) => logger.info(message, { ...fields }),
    warn: (message, fields) => logger.warn(message, { ...fields }),
    error: (message, fields) => logger.error(message, { ...fields }),
  };
}

export { Logger };
