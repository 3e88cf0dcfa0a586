/**
 * Lambda entry for the API. API Gateway has already run the authorizer; the
 * caller is read from `requestContext.authorizer`.
 */

import { Metrics } from '@aws-lambda-powertools/metrics';
import { APIGatewayClient } from '@aws-sdk/client-api-gateway';
import type { Context } from 'hono';
import { handle, type LambdaEvent } from 'hono/aws-lambda';
import { documentClient, requireEnv, sqsClient } from '../adapters/aws.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { ApiGatewayUsagePlans } from '../adapters/usage-plans.ts';
import { API_SENDS_NO_NOTICES, apiServices } from '../app/runtime.ts';
import { AUTH_CONTEXT } from '../authorizer/process.ts';
import { configFromEnvironment } from '../core/config.ts';
import type { Principal } from '../core/model.ts';
import { ENV } from '../definitions/environment.ts';
import { createApi } from './app.ts';

const logger = new Logger();
const metrics = new Metrics();

const services = apiServices(
  {
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
  },
  new ApiGatewayUsagePlans({
    client: new APIGatewayClient({}),
    restApiId: requireEnv(ENV.restApiId),
    stage: requireEnv(ENV.apiStage),
    logger: loggerPort(logger),
  }),
  API_SENDS_NO_NOTICES,
);

function principalFromGateway(c: Context): Principal | undefined {
  const event = (c.env as { event?: LambdaEvent } | undefined)?.event as
    | { requestContext?: { authorizer?: Record<string, unknown> } }
    | undefined;
  const authorizer = event?.requestContext?.authorizer;
  const kind = authorizer?.[AUTH_CONTEXT.principal];
  if (kind === 'admin') return { kind: 'admin' };
  const tenantId = authorizer?.[AUTH_CONTEXT.tenantId];
  if (kind === 'tenant' && typeof tenantId === 'string') return { kind: 'tenant', tenantId };
  return undefined;
}

/**
 * The event with the path the API's routes name (`/v1/events`), made from the API Gateway
 * resource the request matched and its path parameters rather than taken from `path`:
 * behind a custom domain whose base path mapping puts the stage under a base path
 * (`https://api.example.com/events/v1/events`), `path` starts with that base path
 * (`/events/v1/events`) and no route would match it. The resource (`/{proxy+}`,
 * `/v1/health`) is the same whichever URL the client called. API Gateway passes path
 * parameters decoded: each segment is encoded again, as a path's are.
 */
function withRoutePath<L extends LambdaEvent>(event: L): L {
  if (!('resource' in event) || typeof event.resource !== 'string' || !('httpMethod' in event)) return event;
  const parameters: Record<string, string | undefined> = event.pathParameters ?? {};
  const encoded = (value: string) => value.split('/').map(encodeURIComponent).join('/');
  return { ...event, path: event.resource.replace(/\{([^}+]+)\+?\}/g, (_, name: string) => encoded(parameters[name] ?? '')) };
}

/** The remaining time of the invocation serving the request, which hono/aws-lambda passes as `lambdaContext`. */
function invocationLeftMs(c: Context): (() => number) | undefined {
  const context = (c.env as { lambdaContext?: { getRemainingTimeInMillis?: () => number } } | undefined)?.lambdaContext;
  const remaining = context?.getRemainingTimeInMillis;
  return remaining ? () => remaining.call(context) : undefined;
}

const app = createApi({ ...services, invocationLeftMs }, async (c) => principalFromGateway(c));
const serve = handle(app);

export const handler: typeof serve = async (event, context) => {
  // Each log line names its invocation (function_request_id), as the other functions' do.
  if (context) logger.addContext(context as unknown as Parameters<typeof logger.addContext>[0]);
  try {
    return await serve(withRoutePath(event), context);
  } finally {
    publishMetrics(metrics);
  }
};
