/** Lambda entry for the canary receiver, behind a function URL: the canary webhook's endpoint. */
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { APIGatewayProxyResultV2, Context, LambdaFunctionURLEvent } from 'aws-lambda';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { CanaryStore } from '../adapters/canary-store.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { receiveCanary } from '../app/canary.ts';
import { ENV } from '../definitions/environment.ts';

const logger = new Logger();
const metrics = new Metrics();
const deps = {
  store: new CanaryStore({ client: documentClient(), tableName: requireEnv(ENV.controlTable) }),
  metrics: metricsPort(metrics),
  logger: loggerPort(logger),
  now: Date.now,
};

export const handler = async (event: LambdaFunctionURLEvent, context: Context): Promise<APIGatewayProxyResultV2> => {
  logger.addContext(context);
  try {
    const body = event.isBase64Encoded ? Buffer.from(event.body ?? '', 'base64').toString('utf8') : (event.body ?? '');
    const header = (name: string) => event.headers[name];
    const statusCode = await receiveCanary(
      deps,
      { id: header('webhook-id'), timestamp: header('webhook-timestamp'), signature: header('webhook-signature') },
      body,
    );
    return { statusCode };
  } finally {
    publishMetrics(metrics);
  }
};
