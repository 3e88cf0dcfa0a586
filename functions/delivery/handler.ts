/** Lambda entry for delivery: clients and settings are built once per cold start. */

import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Context, SQSEvent } from 'aws-lambda';
import { documentClient, requireEnv, sqsClient } from '../adapters/aws.ts';
import { SnsNotifier, snsClient } from '../adapters/notifier.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { deliveryDeps } from '../app/runtime.ts';
import { configFromEnvironment } from '../core/config.ts';
import { ENV } from '../definitions/environment.ts';
import { makeDeliveryHandler } from './process.ts';

const logger = new Logger();
const metrics = new Metrics();
const process_ = makeDeliveryHandler(
  deliveryDeps(
    {
      config: configFromEnvironment(process.env),
      dynamo: documentClient(),
      sqs: sqsClient(),
      controlTable: requireEnv(ENV.controlTable),
      deliverQueueUrl: requireEnv(ENV.deliverQueueUrl),
      metrics: metricsPort(metrics),
      logger: loggerPort(logger),
    },
    new SnsNotifier({ client: snsClient(), topicArn: requireEnv(ENV.webhookDisabledTopicArn) }),
  ),
);

export const handler = async (event: SQSEvent, context: Context) => {
  logger.addContext(context);
  try {
    return await process_(event, context);
  } finally {
    publishMetrics(metrics);
  }
};
