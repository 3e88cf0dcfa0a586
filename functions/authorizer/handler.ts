/** Lambda entry for the authorizer. The admin key is read again every few minutes (see adapters/admin-key.ts); it is compared by hash. */
import { Metrics } from '@aws-lambda-powertools/metrics';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { APIGatewayTokenAuthorizerEvent, Context } from 'aws-lambda';
import { adminKeyLoader } from '../adapters/admin-key.ts';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { TenantStore } from '../adapters/tenant-store.ts';
import { hashKey } from '../core/keys.ts';
import { ENV } from '../definitions/environment.ts';
import { makeAuthorizerHandler } from './process.ts';

const adminKey = adminKeyLoader(new SecretsManagerClient({}), requireEnv(ENV.adminKeySecretArn));
const logger = new Logger();
const metrics = new Metrics();

const authorizer = makeAuthorizerHandler({
  adminKeyHash: async () => hashKey(await adminKey()),
  tenants: new TenantStore({ client: documentClient(), tableName: requireEnv(ENV.controlTable) }),
  adminUsageKey: requireEnv(ENV.adminUsageKey),
  metrics: metricsPort(metrics),
  logger: loggerPort(logger),
});

export const handler = async (event: APIGatewayTokenAuthorizerEvent, context: Context) => {
  logger.addContext(context);
  try {
    return await authorizer(event);
  } finally {
    // A key allowed counts nothing (see publishMetrics).
    publishMetrics(metrics);
  }
};
