/** Lambda entry for the authorizer. The admin key is read again every few minutes (see adapters/admin-key.ts); it is compared by hash. */
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { adminKeyLoader } from '../adapters/admin-key.ts';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { TenantStore } from '../adapters/tenant-store.ts';
import { hashKey } from '../core/keys.ts';
import { ENV } from '../definitions/environment.ts';
import { makeAuthorizerHandler } from './process.ts';

const adminKey = adminKeyLoader(new SecretsManagerClient({}), requireEnv(ENV.adminKeySecretArn));

export const handler = makeAuthorizerHandler({
  adminKeyHash: async () => hashKey(await adminKey()),
  tenants: new TenantStore({ client: documentClient(), tableName: requireEnv(ENV.controlTable) }),
  adminUsageKey: requireEnv(ENV.adminUsageKey),
});
