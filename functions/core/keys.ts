/** Keys and hashes derived from domain identities. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ObjectKey } from './model.ts';

/** A FIFO message group id for an object: stable, ≤ 128 characters, no raw resource text. */
export function objectGroupId(key: ObjectKey): string {
  return createHash('sha256').update(`${key.tenantId}\n${key.resource}`).digest('hex');
}

export type KeyKind = 'tenant' | 'admin';

const KEY_PREFIX: { readonly [K in KeyKind]: string } = { tenant: 'sk_', admin: 'ak_' };

export function generateApiKey(kind: KeyKind, random: (n: number) => Buffer = randomBytes): string {
  return KEY_PREFIX[kind] + random(32).toString('base64url');
}

/**
 * Every Authorization header a key could be read from (bearerToken, then keyKind's
 * shape), as a regular expression API Gateway checks before it invokes the authorizer:
 * a header that cannot hold a key is refused with 401 at no Lambda cost. Written with
 * character classes common to JavaScript and Java, since API Gateway evaluates it.
 */
export const AUTHORIZATION_HEADER_PATTERN = '^[Bb][Ee][Aa][Rr][Ee][Rr]\\s+[a-z]{2}_[A-Za-z0-9_-]{20,200}\\s*$';

/** What a bearer token claims to be, from its prefix alone. */
export function keyKind(key: string): KeyKind | undefined {
  if (!/^[a-z]{2}_[A-Za-z0-9_-]{20,200}$/.test(key)) return undefined;
  if (key.startsWith(KEY_PREFIX.tenant)) return 'tenant';
  if (key.startsWith(KEY_PREFIX.admin)) return 'admin';
  return undefined;
}

/** Keys are stored and compared as SHA-256 hashes; the key itself is never stored. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && timingSafeEqual(left, right);
}

/** `Authorization: Bearer <key>` → the key, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** Which of `shards` shards (0 to `shards` - 1) a text is put in: a hash, spread evenly, the same everywhere. */
export function shardNumber(text: string, shards: number): number {
  return createHash('sha256').update(text).digest().readUInt16BE(0) % shards;
}

/** Which `by_schedule` index shard an object's meta item is listed under: 0 to `shards` - 1. */
export function scheduleShardNumber(key: ObjectKey, shards: number): number {
  return shardNumber(`${key.tenantId}\n${key.resource}`, shards);
}

/** A shard as the index's partition key names it. */
export function scheduleShardKey(shard: number): string {
  return `s${shard}`;
}

/** The shard an object's meta item is listed under, as the index's partition key names it. */
export function scheduleShard(key: ObjectKey, shards: number): string {
  return scheduleShardKey(scheduleShardNumber(key, shards));
}
