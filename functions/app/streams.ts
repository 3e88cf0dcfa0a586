/**
 * Pulling an event stream (SPEC §3 Event streams, Asana-style): without a valid
 * token, 412 with a fresh token, and the stream collects from that moment; with
 * one, up to 100 events after it, the next token, and `has_more`.
 */
import type { StreamStore } from '../adapters/stream-store.ts';
import { decodeSyncToken, encodeSyncToken, positionAt, positionTime, STREAM_SETTLE_MS } from '../core/stream-token.ts';

export { STREAM_SETTLE_MS };
export const STREAM_PAGE = 100;

export interface StreamDeps {
  readonly streams: StreamStore;
  readonly retentionDays: number;
  readonly now: () => number;
}

export type PollResult =
  | { readonly status: 412; readonly sync: string; readonly reason: string }
  | { readonly status: 200; readonly data: unknown[]; readonly sync: string; readonly has_more: boolean };

export async function pollStream(deps: StreamDeps, tenantId: string, resource: string, token: string | undefined): Promise<PollResult> {
  const now = deps.now();
  const key = await deps.streams.tokenKey();
  const wasActive = !(await deps.streams.expired(tenantId, resource, now));
  await deps.streams.touch(tenantId, resource, now);
  const retentionMs = deps.retentionDays * 86_400_000;
  const fresh = () =>
    encodeSyncToken(key, { tenantId, resource, position: positionAt(now - STREAM_SETTLE_MS), issuedAt: now, retentionMs });
  if (token === undefined || token === '') return { status: 412, sync: fresh(), reason: 'Start the stream with this sync token.' };
  const position = decodeSyncToken(key, token, tenantId, resource);
  if (!position) return { status: 412, sync: fresh(), reason: 'The sync token is not valid for this stream; start again with this one.' };
  // A token's position is the settle time before it was issued: it stays valid for the
  // whole retention period after that (the stream log keeps entries as much longer). An
  // entry keeps the period it was appended with: after retentionDays was raised, those
  // appended before still go at the old period's end, and a 200 from a token past them
  // would skip them without a word. So a token keeps the shortest period since its stream
  // was started (`kept`), and passes it on; a stream started after the change has the new one.
  const kept = Math.min(retentionMs, position.retentionMs ?? retentionMs);
  if (now - positionTime(position.position) > kept + STREAM_SETTLE_MS) {
    return { status: 412, sync: fresh(), reason: 'The sync token is older than the retention period; start again with this one.' };
  }
  if (!wasActive) {
    return {
      status: 412,
      sync: fresh(),
      reason: 'Nobody polled this stream for the retention period, so it expired; start again with this one.',
    };
  }
  const until = positionAt(now - STREAM_SETTLE_MS);
  const { entries, more, resumeAfter } = await deps.streams.read(tenantId, resource, position.position, until, STREAM_PAGE, now);
  const last = entries.at(-1)?.position ?? position.position;
  // With nothing more to read up to `until`, the token moves to it: a quiet stream's
  // token never ages out while it is polled.
  const next = more ? (resumeAfter ?? last) : last > until ? last : until;
  return {
    status: 200,
    data: entries.map((e) => e.event),
    sync: encodeSyncToken(key, { tenantId, resource, position: next, issuedAt: now, retentionMs: kept }),
    has_more: more,
  };
}
