/**
 * The environment the stack deploys the API function with (and the delivery function's
 * topic), its AWS clients pointed at the sandbox's emulators: for tests that run a real
 * entry file (functions/<name>/handler.ts) as Lambda would.
 */
import { CONFIG_ENV } from '../../functions/core/config.ts';
import { ENV } from '../../functions/definitions/environment.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';

export function deployedEnvironment(sandbox: Sandbox, stage: string): Record<string, string | undefined> {
  return {
    [ENV.eventsTable]: sandbox.wiring.eventsTable,
    [ENV.controlTable]: sandbox.wiring.controlTable,
    [ENV.distributeQueueUrl]: sandbox.queues.Distribute?.url,
    [ENV.distributeBulkQueueUrl]: sandbox.queues.DistributeBulk?.url,
    [ENV.deliverQueueUrl]: sandbox.queues.Deliver?.url,
    [ENV.restApiId]: 'abc123',
    [ENV.apiStage]: stage,
    [ENV.webhookDisabledTopicArn]: 'arn:aws:sns:us-east-1:000000000000:disabled',
    [CONFIG_ENV]: JSON.stringify(sandbox.config),
    AWS_ENDPOINT_URL_DYNAMODB: sandbox.emulators.dynamo.endpoint,
    AWS_ENDPOINT_URL_SQS: sandbox.emulators.sqs.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'sandbox',
    AWS_SECRET_ACCESS_KEY: 'sandbox',
    POWERTOOLS_LOG_LEVEL: 'SILENT',
  };
}
