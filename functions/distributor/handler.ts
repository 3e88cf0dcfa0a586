/** Lambda entry for the distributor: clients and settings are built once per cold start. */
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Context, SQSEvent } from 'aws-lambda';
import { documentClient, requireEnv, sqsClient } from '../adapters/aws.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { distributor } from '../app/runtime.ts';
import { configFromEnvironment } from '../core/config.ts';
import { ENV } from '../definitions/environment.ts';
import { makeDistributorHandler } from './process.ts';

const logger = new Logger();
const metrics = new Metrics();
const log = loggerPort(logger);
const process_ = makeDistributorHandler(
  distributor({
    config: configFromEnvironment(process.env),
    dynamo: documentClient(),
    sqs: sqsClient(),
    eventsTable: requireEnv(ENV.eventsTable),
    controlTable: requireEnv(ENV.controlTable),
    distributeQueueUrl: requireEnv(ENV.distributeQueueUrl),
    distributeBulkQueueUrl: requireEnv(ENV.distributeBulkQueueUrl),
    deliverQueueUrl: requireEnv(ENV.deliverQueueUrl),
    metrics: metricsPort(metrics),
    logger: log,
  }),
  log,
  metricsPort(metrics),
);

export const handler = async (event: SQSEvent, context: Context) => {
  logger.addContext(context);
  try {
    return await process_(event, context);
  } finally {
    publishMetrics(metrics);
  }
};
