/**
 * The admin key: `ak_` + the `token` field of a Secrets Manager secret. Read once and
 * kept for a few minutes, so that rotating the secret takes effect within them in
 * every warm container; if a read fails after that, the key last read stays in use.
 */
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';

/** How long a container keeps the admin key before reading the secret again. */
export const ADMIN_KEY_MAX_AGE_MS = 5 * 60_000;

/**
 * The `token` field of the secret's value. A value that is not JSON is refused with a
 * message of our own: JSON.parse's would quote the start of the value (the key itself,
 * if the token was stored bare), and the authorizer logs the error.
 */
function tokenOf(value: string): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new Error('The admin key secret is not JSON: store it as {"token":"…"}');
  }
  const token = (parsed as { token?: unknown } | null)?.token;
  return typeof token === 'string' && token !== '' ? token : undefined;
}

export function adminKeyLoader(
  client: SecretsManagerClient,
  secretArn: string,
  options: { maxAgeMs?: number; now?: () => number } = {},
): () => Promise<string> {
  const maxAgeMs = options.maxAgeMs ?? ADMIN_KEY_MAX_AGE_MS;
  const now = options.now ?? Date.now;
  let last: { key: string; at: number } | undefined;
  let reading: Promise<string> | undefined;
  const read = async () => {
    const secret = await client.send(new GetSecretValueCommand({ SecretId: secretArn }));
    const token = tokenOf(secret.SecretString ?? '{}');
    if (!token) throw new Error('The admin key secret has no token field');
    last = { key: `ak_${token}`, at: now() };
    return last.key;
  };
  return async () => {
    if (last && now() - last.at < maxAgeMs) return last.key;
    // Concurrent callers share one read.
    reading ??= read().finally(() => {
      reading = undefined;
    });
    try {
      return await reading;
    } catch (error) {
      if (!last) throw error;
      // Kept, and read again in a minute rather than on every call while the read fails.
      last = { key: last.key, at: now() - maxAgeMs + Math.min(maxAgeMs, 60_000) };
      return last.key;
    }
  };
}
