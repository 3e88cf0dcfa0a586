/** The admin key, read once from Secrets Manager: `ak_` + the secret's `token` field. */
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';

export function adminKeyLoader(client: SecretsManagerClient, secretArn: string): () => Promise<string> {
  let key: Promise<string> | undefined;
  const load = async () => {
    const secret = await client.send(new GetSecretValueCommand({ SecretId: secretArn }));
    const token = (JSON.parse(secret.SecretString ?? '{}') as { token?: string }).token;
    if (!token) throw new Error('The admin key secret has no token field');
    return `ak_${token}`;
  };
  return () => {
    key ??= load().catch((error: unknown) => {
      key = undefined;
      throw error;
    });
    return key;
  };
}
