/**
 * The real Secrets Manager client against a local HTTP server that answers as
 * Secrets Manager does (there is no emulator of it to run).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminKeyLoader } from '../../functions/adapters/admin-key.ts';

let server: http.Server;
let endpoint: string;
let token = 'first';
let failing = false;
/** The secret's whole value as stored, when a test sets one that is not `{"token":…}`. */
let rawSecret: string | undefined;
let reads = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      reads++;
      if (failing) {
        res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': 'AccessDeniedException' });
        return res.end(JSON.stringify({ __type: 'AccessDeniedException', message: 'denied' }));
      }
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(
        JSON.stringify({
          ARN: 'arn:aws:secretsmanager:us-east-1:1:secret:admin',
          Name: 'admin',
          SecretString: rawSecret ?? JSON.stringify({ token }),
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('the admin key', () => {
  it('is read again after its maximum age, so a rotated key works, and the last one read stays when a read fails', async () => {
    const client = new SecretsManagerClient({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
    let clock = 1_000_000;
    const adminKey = adminKeyLoader(client, 'arn:aws:secretsmanager:us-east-1:1:secret:admin', { maxAgeMs: 60_000, now: () => clock });
    reads = 0;

    expect(await Promise.all([adminKey(), adminKey()])).toEqual(['ak_first', 'ak_first']);
    token = 'second';
    clock += 59_000;
    expect(await adminKey()).toBe('ak_first');
    expect(reads).toBe(1);

    clock += 1_000;
    expect(await adminKey()).toBe('ak_second');

    failing = true;
    clock += 10 * 60_000;
    expect(await adminKey()).toBe('ak_second');
    expect(reads).toBe(3);
    // While reads fail, it tries again a minute later, not on every call.
    expect(await adminKey()).toBe('ak_second');
    expect(reads).toBe(3);
    clock += 60_000;
    expect(await adminKey()).toBe('ak_second');
    expect(reads).toBe(4);
    failing = false;
  });

  it('fails when there is no key yet and the secret cannot be read', async () => {
    failing = true;
    const client = new SecretsManagerClient({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
    await expect(adminKeyLoader(client, 'arn:aws:secretsmanager:us-east-1:1:secret:admin')()).rejects.toThrow();
    failing = false;
  });

  it('never puts any of the secret in the error of a value that is not JSON (the authorizer logs that error)', async () => {
    const client = new SecretsManagerClient({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
    // An operator who put the token itself in the secret (or the whole key), not {"token":"…"}.
    for (const value of ['TokenValueNotJson0123456789', 'ak_TokenValueNotJson0123456789', '{"token":"TokenValueNotJson0123456789"']) {
      rawSecret = value;
      const adminKey = adminKeyLoader(client, 'arn:aws:secretsmanager:us-east-1:1:secret:admin');
      const error = await adminKey().then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(error, value).toBeInstanceOf(Error);
      expect(`${error?.message} ${error?.stack} ${JSON.stringify(error)}`, value).not.toMatch(/TokenValu/);
      expect(error?.message).toMatch(/admin key secret/);
    }
    rawSecret = undefined;
  });
});
