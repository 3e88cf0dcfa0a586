/** Powertools-backed telemetry for the Lambda functions (JSON logs, EMF metrics in namespace Sluice). */
import { Logger } from '@aws-lambda-powertools/logger';
import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';

export function metricsPort(metrics: Metrics): MetricsPort {
  return {
    seconds(name, value) {
      metrics.addMetric(name, MetricUnit.Seconds, value);
    },
    // Always the plain metric (what alarms watch), plus a dimensioned copy when
    // dimensions are given (what dashboards break down by).
    count(name, value = 1, dimensions) {
      metrics.addMetric(name, MetricUnit.Count, value);
      if (dimensions && Object.keys(dimensions).length > 0) {
        const single = metrics.singleMetric();
        for (const [dimension, dimensionValue] of Object.entries(dimensions)) single.addDimension(dimension, dimensionValue);
        single.addMetric(name, MetricUnit.Count, value);
      }
    },
  };
}

/**
 * Publishes what an invocation counted, and nothing when it counted nothing: Powertools
 * writes a warning on every publish of no metrics, and one per invocation (every stream
 * poll and read of the API, every idle doorbell, every call to the canary's public
 * receiver) would fill a function's logs, and bury its own warnings, at CloudWatch Logs' price.
 */
export function publishMetrics(metrics: Metrics): void {
  if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
}

export function loggerPort(logger: Logger): LoggerPort {
  return {
    info: (message, fields) => logger.info(message, { ...fields }),
    warn: (message, fields) => logger.warn(message, { ...fields }),
    error: (message, fields) => logger.error(message, { ...fields }),
  };
}

export { Logger };
