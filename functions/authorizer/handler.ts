/** Lambda entry for the authorizer. The admin key's hash is read once per cold start. */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { documentClient, requireEnv } from '../adapters/aws.ts';
import { TenantStore } from '../adapters/tenant-store.ts';
import { hashKey } from '../core/keys.ts';
import { ENV } from '../definitions/environment.ts';
import { makeAuthorizerHandler } from './process.ts';

const secrets = new SecretsManagerClient({});
const secretArn = requireEnv(ENV.adminKeySecretArn);
let adminKeyHash: Promise<string> | undefined;

/** The admin key is `ak_` + the secret's `token` field; only its hash is kept in memory. */
async function loadAdminKeyHash(): Promise<string> {
  const secret = await secrets.send(new GetSecretValueCommand({ SecretId: secretArn }));
  const token = (JSON.parse(secret.SecretString ?? '{}') as { token?: string }).token;
  if (!token) throw new Error('The admin key secret has no token field');
  return hashKey(`ak_${token}`);
}

export const handler = makeAuthorizerHandler({
  adminKeyHash: () => {
    adminKeyHash ??= loadAdminKeyHash().catch((error: unknown) => {
      adminKeyHash = undefined;
      throw error;
    });
    return adminKeyHash;
  },
  tenants: new TenantStore({ client: documentClient(), tableName: requireEnv(ENV.controlTable) }),
  adminUsageKey: requireEnv(ENV.adminUsageKey),
});
