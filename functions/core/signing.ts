/**
 * Standard Webhooks signatures (SPEC §3 Deliveries): HMAC-SHA256 over
 * "<msg id>.<unix seconds>.<body>", keyed with the base64-decoded bytes after `whsec_`.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const SECRET_PREFIX = 'whsec_';

export function generateSecret(random: (n: number) => Buffer = randomBytes): string {
  return SECRET_PREFIX + random(32).toString('base64');
}

function secretKey(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error('A webhook secret starts with whsec_');
  return Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
}

export function sign(secret: string, messageId: string, timestampSeconds: number, body: string): string {
  const mac = createHmac('sha256', secretKey(secret)).update(`${messageId}.${timestampSeconds}.${body}`).digest('base64');
  return `v1,${mac}`;
}

/** The `webhook-signature` header: one signature per live secret, space-separated. */
export function signatureHeader(secrets: readonly string[], messageId: string, timestampSeconds: number, body: string): string {
  return secrets.map((secret) => sign(secret, messageId, timestampSeconds, body)).join(' ');
}

export interface SignedHeaders {
  readonly 'content-type': 'application/json';
  readonly 'user-agent': string;
  readonly 'webhook-id': string;
  readonly 'webhook-timestamp': string;
  readonly 'webhook-signature': string;
}

export function deliveryHeaders(
  secrets: readonly string[],
  messageId: string,
  timestampSeconds: number,
  body: string,
  version: string,
): SignedHeaders {
  return {
    'content-type': 'application/json',
    'user-agent': `sluice/${version}`,
    'webhook-id': messageId,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': signatureHeader(secrets, messageId, timestampSeconds, body),
  };
}

/** How far a delivery's timestamp may be from now and still verify. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

/**
 * Verifies a delivery as a subscriber would (used by sluice's own canary
 * receiver): one of the `v1,` signatures must match, and the timestamp must be
 * within the tolerance.
 */
export function verifySignature(
  secret: string,
  headers: { id: string | undefined; timestamp: string | undefined; signature: string | undefined },
  body: string,
  nowSeconds: number,
): boolean {
  const { id, timestamp, signature } = headers;
  if (!id || !timestamp || !signature || !/^\d+$/.test(timestamp)) return false;
  if (Math.abs(nowSeconds - Number(timestamp)) > SIGNATURE_TOLERANCE_SECONDS) return false;
  const expected = Buffer.from(sign(secret, id, Number(timestamp), body));
  return signature.split(' ').some((candidate) => {
    const given = Buffer.from(candidate);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
