/** Lambda entry for the reconciler, run on a schedule (EventBridge). */
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Context } from 'aws-lambda';
import { documentClient, requireEnv, sqsClient } from '../adapters/aws.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { reconcile } from '../app/reconciler.ts';
import { reconcilerDeps } from '../app/runtime.ts';
import { configFromEnvironment } from '../core/config.ts';
import { ENV } from '../definitions/environment.ts';

const logger = new Logger();
const metrics = new Metrics();
const deps = reconcilerDeps({
  config: configFromEnvironment(process.env),
  dynamo: documentClient(),
  sqs: sqsClient(),
  eventsTable: requireEnv(ENV.eventsTable),
  controlTable: requireEnv(ENV.controlTable),
  distributeQueueUrl: requireEnv(ENV.distributeQueueUrl),
  distributeBulkQueueUrl: requireEnv(ENV.distributeBulkQueueUrl),
  deliverQueueUrl: requireEnv(ENV.deliverQueueUrl),
  metrics: metricsPort(metrics),
  logger: loggerPort(logger),
});

export const handler = async (_event: unknown, context: Context) => {
  logger.addContext(context);
  try {
    const report = await reconcile({ ...deps, timeLeftMs: () => context.getRemainingTimeInMillis() });
    logger.info('Reconciled', { ...report });
    return report;
  } finally {
    publishMetrics(metrics);
  }
};
