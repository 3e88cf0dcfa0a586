/**
 * Ingest (SPEC §3 Events): admits a request's events into their objects' queues
 * and rings each object's doorbell when this request flipped it from idle.
 */

import type { Doorbell } from '../adapters/doorbell.ts';
import type { AcceptedEvent, QueueStore } from '../adapters/queue-store.ts';
import type { SluiceConfig } from '../core/config.ts';
import { QueueFullError } from '../core/errors.ts';
import type { EventInput, ObjectKey } from '../core/model.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';

export type EventResult =
  | { readonly id: string; readonly status: 'accepted' | 'duplicate' }
  | { readonly status: 'rejected'; readonly error: { readonly code: string; readonly message: string } };

export interface PublishOutcome {
  readonly results: EventResult[];
  /** 429 when every event was rejected for rate or queue limits. */
  readonly httpStatus: 202 | 429;
  readonly retryAfterSeconds: number | undefined;
}

export interface IngestDeps {
  readonly queues: QueueStore;
  readonly doorbell: Doorbell;
  readonly config: SluiceConfig;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
  readonly newEventId: () => string;
}

const LIMIT_CODES = new Set(['rate_limited', 'queue_full']);

export async function publish(deps: IngestDeps, tenantId: string, inputs: readonly EventInput[]): Promise<PublishOutcome> {
  const results: EventResult[] = new Array(inputs.length);
  const byObject = new Map<string, number[]>();
  inputs.forEach((input, index) => {
    const indexes = byObject.get(input.resource) ?? [];
    indexes.push(index);
    byObject.set(input.resource, indexes);
  });
  await Promise.all(
    [...byObject].map(([resource, indexes]) =>
      admitToObject(
        deps,
        { tenantId, resource },
        indexes.map((i) => inputs[i] as EventInput),
      ).then((objectResults) => {
        objectResults.forEach((result, k) => {
          results[indexes[k] as number] = result;
        });
      }),
    ),
  );
  const accepted = results.filter((r) => r.status === 'accepted').length;
  const rejected = results.length - accepted;
  deps.metrics.count('EventsAccepted', accepted);
  for (const r of results) {
    if (r.status === 'rejected') deps.metrics.count('EventsRejected', 1, { reason: r.error.code });
  }
  const allLimited = rejected === results.length && results.every((r) => r.status === 'rejected' && LIMIT_CODES.has(r.error.code));
  return { results, httpStatus: allLimited ? 429 : 202, retryAfterSeconds: allLimited ? 1 : undefined };
}

async function admitToObject(deps: IngestDeps, key: ObjectKey, inputs: readonly EventInput[]): Promise<EventResult[]> {
  const { queues, config } = deps;
  let admitted = inputs.length;
  const now = deps.now();
  let reservation: Awaited<ReturnType<QueueStore['reserve']>>;
  try {
    reservation = await queues.reserve(key, admitted, config.objectQueueCap, now);
  } catch (error) {
    if (!(error instanceof QueueFullError)) throw error;
    // Not all fit: admit as many as there is room for, in order, and reject the rest.
    admitted = Math.min(inputs.length - 1, config.objectQueueCap - error.depth);
    if (admitted <= 0) return inputs.map(() => queueFull(config.objectQueueCap));
    try {
      reservation = await queues.reserve(key, admitted, config.objectQueueCap, now);
    } catch (retryError) {
      if (retryError instanceof QueueFullError) return inputs.map(() => queueFull(config.objectQueueCap));
      throw retryError;
    }
  }
  const createdAt = new Date(now).toISOString();
  const events: AcceptedEvent[] = inputs
    .slice(0, admitted)
    .map((input, i) => ({ id: deps.newEventId(), slot: reservation.firstSlot + i, input, createdAt }));
  let stored = true;
  try {
    await queues.writeEvents(key, events, now);
  } catch (error) {
    stored = false;
    deps.logger.error('Event write failed after reservation', { tenant: key.tenantId, resource: key.resource, error });
    // Void the slots so the distributor skips them now rather than after the grace period.
    await queues
      .voidSlots(
        key,
        events.map((e) => e.slot),
        now,
      )
      .catch(() => undefined);
  }
  if (reservation.flipped) {
    // Only the ingest that flipped idle → scheduled rings, so a hot object has one
    // doorbell in flight however fast it is written.
    await deps.doorbell.ring(key, `s${reservation.firstSlot}`);
    deps.metrics.count('DoorbellsRung', 1, { by: 'ingest' });
  }
  const results: EventResult[] = events.map((e) =>
    stored
      ? { id: e.id, status: 'accepted' }
      : { status: 'rejected', error: { code: 'internal', message: 'The event could not be stored; send it again.' } },
  );
  for (let i = admitted; i < inputs.length; i++) results.push(queueFull(config.objectQueueCap));
  return results;
}

function queueFull(cap: number): EventResult {
  return {
    status: 'rejected',
    error: { code: 'queue_full', message: `This resource already has ${cap} events waiting; slow down and retry later.` },
  };
}
