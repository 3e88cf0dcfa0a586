/** Lambda entry for the canary sender, run on a schedule. */

import { Metrics } from '@aws-lambda-powertools/metrics';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Context } from 'aws-lambda';
import { adminKeyLoader } from '../adapters/admin-key.ts';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { SecretCanaryKey } from '../adapters/canary-key.ts';
import { CanaryStore } from '../adapters/canary-store.ts';
import { Logger, loggerPort, metricsPort, publishMetrics } from '../adapters/powertools.ts';
import { runCanary } from '../app/canary.ts';
import { ENV } from '../definitions/environment.ts';

const logger = new Logger();
const metrics = new Metrics();
const secrets = new SecretsManagerClient({});
const deps = {
  store: new CanaryStore({ client: documentClient(), tableName: requireEnv(ENV.controlTable) }),
  keys: new SecretCanaryKey(secrets, requireEnv(ENV.canaryKeySecretArn)),
  apiUrl: requireEnv(ENV.apiUrl).replace(/\/+$/, ''),
  adminKey: adminKeyLoader(secrets, requireEnv(ENV.adminKeySecretArn)),
  receiverUrl: requireEnv(ENV.canaryReceiverUrl),
  metrics: metricsPort(metrics),
  logger: loggerPort(logger),
  now: Date.now,
};

export const handler = async (_event: unknown, context: Context) => {
  logger.addContext(context);
  try {
    await runCanary(deps);
  } finally {
    publishMetrics(metrics);
  }
};
