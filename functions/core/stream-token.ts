/**
 * Event-stream sync tokens (SPEC §3 Event streams): opaque to clients,
 * tamper-evident (HMAC-SHA256), and bound to one tenant and resource, so a token
 * from one tenant or stream is useless for another.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * How long after stamping a position a distributor's append may land: one that took
 * longer is written again at a fresh position (app/distributor.ts).
 */
export const STREAM_LATE_MS = 1_000;

/**
 * How far apart the clocks of two instances (a distributor's, the API's) may be: Lambda's
 * are NTP-synced but not equal, a second or two apart.
 */
export const STREAM_CLOCKS_APART_MS = 2_000;

/**
 * A page never reaches closer than this to now: a distributor may write a position a
 * moment after computing it (up to STREAM_LATE_MS), on a clock behind the reader's (up
 * to STREAM_CLOCKS_APART_MS), and a reader must not have moved past it.
 */
export const STREAM_SETTLE_MS = STREAM_LATE_MS + STREAM_CLOCKS_APART_MS;

export interface StreamPosition {
  readonly tenantId: string;
  readonly resource: string;
  /** The last stream position read (an opaque, ordered string). */
  readonly position: string;
  /** When the token was issued (epoch ms). */
  readonly issuedAt: number;
  /**
   * The retention period (ms) the stream entries after `position` may have been kept
   * for: the one in force when the token's stream was started, or a shorter one since
   * (app/streams.ts). Undefined in a token issued before tokens carried it.
   */
  readonly retentionMs?: number;
}

export function encodeSyncToken(key: Buffer, position: StreamPosition): string {
  const payload = Buffer.from(
    JSON.stringify({
      t: position.tenantId,
      r: position.resource,
      p: position.position,
      i: position.issuedAt,
      ...(position.retentionMs !== undefined && { k: position.retentionMs }),
    }),
  ).toString('base64url');
  const mac = createHmac('sha256', key).update(payload).digest('base64url');
  return `${payload}.${mac}`;
}

/** The token's position, or undefined when it is malformed, forged, or for another tenant or resource. */
export function decodeSyncToken(key: Buffer, token: string, tenantId: string, resource: string): StreamPosition | undefined {
  const [payload, mac, extra] = token.split('.');
  if (!payload || !mac || extra !== undefined) return undefined;
  // Compared as the text handed out, not as decoded bytes: Node's base64 decoder skips
  // characters outside the alphabet and the last character's 2 spare bits, so a changed
  // token (`…c` as `…d`, `==` or `~` appended) decoded to the same MAC and was accepted.
  const expected = Buffer.from(createHmac('sha256', key).update(payload).digest('base64url'));
  const given = Buffer.from(mac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  let parsed: { t?: unknown; r?: unknown; p?: unknown; i?: unknown; k?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (parsed.t !== tenantId || parsed.r !== resource || typeof parsed.p !== 'string' || typeof parsed.i !== 'number') return undefined;
  return { tenantId, resource, position: parsed.p, issuedAt: parsed.i, ...(typeof parsed.k === 'number' && { retentionMs: parsed.k }) };
}

const pad = (n: number, width: number) => String(Math.max(0, Math.floor(n))).padStart(width, '0');

/**
 * A position for an event: ordered by distribution time, then source resource and seq.
 * A gap marker, outside its resource's seq (0), adds its id: successive turns of one
 * object may run in two containers, on clocks up to STREAM_CLOCKS_APART_MS apart, so
 * two of its markers may be stamped with the same millisecond, and with one position
 * the later write would replace the earlier marker.
 */
export function streamPosition(distributedAt: number, resource: string, seq: number, markerId?: string): string {
  const position = `${pad(distributedAt, 15)}#${resource}#${pad(seq, 12)}`;
  return markerId === undefined ? position : `${position}#${markerId}`;
}

/** The position just before anything distributed at or after `at`. */
export function positionAt(at: number): string {
  return pad(at, 15);
}

/** When a position was written (epoch ms). */
export function positionTime(position: string): number {
  return Number(position.slice(0, 15));
}
