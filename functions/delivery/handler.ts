/** Lambda entry for delivery: clients and settings are built once per cold start. */
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Context, SQSEvent } from 'aws-lambda';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { Logger, loggerPort, metricsPort } from '../adapters/powertools.ts';
import { deliveryDeps } from '../app/runtime.ts';
import { configFromEnvironment } from '../core/config.ts';
import { ENV } from '../definitions/environment.ts';
import { makeDeliveryHandler } from './process.ts';

const logger = new Logger();
const metrics = new Metrics();
const process_ = makeDeliveryHandler(
  deliveryDeps({
    config: configFromEnvironment(process.env),
    dynamo: documentClient(),
    controlTable: requireEnv(ENV.controlTable),
    metrics: metricsPort(metrics),
    logger: loggerPort(logger),
  }),
);

export const handler = async (event: SQSEvent, context: Context) => {
  logger.addContext(context);
  try {
    return await process_(event, context);
  } finally {
    metrics.publishStoredMetrics();
  }
};
