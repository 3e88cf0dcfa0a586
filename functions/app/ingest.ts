/**
 * Ingest (SPEC §3 Events): admits a request's events into their objects' queues,
 * within each object's cap and rate, and rings an object's doorbell when this
 * request flipped it from idle.
 */

import type { Doorbell } from '../adapters/doorbell.ts';
import { eventFingerprint, type IdempotencyStore } from '../adapters/idempotency-store.ts';
import { type AcceptedEvent, fitsInline, type QueueStore, type Reservation } from '../adapters/queue-store.ts';
import { type AdmissionLimits, decideAdmission, type RejectReason } from '../core/admission.ts';
import type { SluiceConfig } from '../core/config.ts';
import type { EventInput, ObjectKey } from '../core/model.ts';
import { type LoggerPort, LogTally, type MetricsPort } from '../core/telemetry.ts';

export interface RejectedResult {
  readonly status: 'rejected';
  readonly error: { readonly code: string; readonly message: string };
}

export type EventResult = { readonly id: string; readonly status: 'accepted' | 'duplicate' } | RejectedResult;

export interface PublishOutcome {
  readonly results: EventResult[];
  /** 429 when every event was rejected for rate or queue limits. */
  readonly httpStatus: 202 | 429;
  /** When any event was rejected for rate or queue limits: when to send it again. */
  readonly retryAfterSeconds: number | undefined;
}

export interface IngestDeps {
  readonly queues: QueueStore;
  readonly idempotency: IdempotencyStore;
  readonly doorbell: Pick<Doorbell, 'ring'>;
  readonly config: SluiceConfig;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
  readonly newEventId: () => string;
}

const LIMIT_CODES: ReadonlySet<RejectReason> = new Set(['rate_limited', 'queue_full']);
const MAX_RESERVE_ATTEMPTS = 4;
/** DynamoDB's answers when one object's partition is written past its throughput. */
const STORAGE_THROTTLES = new Set(['ThrottlingException', 'ProvisionedThroughputExceededException', 'RequestLimitExceeded']);

/**
 * The last rate tat this container saw per object. When it lies in the future the
 * object is busy, and the busy form of the reserve write is tried first: a hot
 * object then costs one write per request, not a refused write and a read.
 */
const lastTat = new Map<string, number>();
const TAT_MEMORY = 10_000;
/**
 * An object this container reserved on within this long may still have events
 * pending, so its event is not offered for the meta item (a refused try is a write).
 */
const RECENT_MS = 1_000;

function rejected(code: string, message: string): EventResult {
  return { status: 'rejected', error: { code, message } };
}

function notStored(): EventResult {
  return rejected('internal', 'The event could not be stored; send it again.');
}

function limitRejection(reason: RejectReason, config: SluiceConfig): EventResult {
  return reason === 'queue_full'
    ? rejected('queue_full', `This resource already has ${config.objectQueueCap} events waiting; slow down and retry later.`)
    : rejected('rate_limited', `This resource takes at most ${config.objectRatePerSecond} events per second; slow down and retry later.`);
}

const MAX_CLAIM_ATTEMPTS = 3;

/**
 * How often a container logs that an object's events are refused for its rate or queue
 * cap, or a tenant's events for their idempotency key. The metric that pages (EventsRejected,
 * events-rejected-or-dropped) cannot name the object, a rate-limited object's queue stays
 * shallow, so the deepest queues need not show it, and a request whose events are refused
 * for their key is answered 202 like any other: a line names it, at most once a minute per
 * object (per tenant for a key), since a line per request would be a flood of logs in the
 * very flood it reports. Each line counts the refusals since the one before.
 */
const REFUSAL_LOG_INTERVAL_MS = 60_000;
/** The refusals a line reports, by the codes it counts. */
const REFUSAL_LINES = {
  limit: { message: "Events refused for their object's rate or queue cap", codes: ['rate_limited', 'queue_full'], perTenant: false },
  // A producer's bug (a key used again for another event, or sent by two requests at once):
  // its tenant is the one to tell, once a minute whatever the objects. Per object, a
  // producer sending one id for every event (`undefined`, say), each request another
  // object's change, had a line per request; the line names the object it was written for.
  key: {
    message: 'Events refused for their idempotency key (used for another event, or being accepted by another request)',
    codes: ['invalid_request', 'conflict'],
    perTenant: true,
  },
} as const;
type RefusalLine = keyof typeof REFUSAL_LINES;
/** The line, if any, that reports an event refused with this code. */
const REFUSAL_LINE_OF: ReadonlyMap<string, RefusalLine> = new Map(
  (Object.keys(REFUSAL_LINES) as RefusalLine[]).flatMap((line) => REFUSAL_LINES[line].codes.map((code) => [code, line] as const)),
);
/** Per line and object (or tenant), the refusals since this container's last line about them. */
const refusals = new LogTally(REFUSAL_LOG_INTERVAL_MS);

function noteRefusals(deps: IngestDeps, line: RefusalLine, key: ObjectKey, counts: Readonly<Record<string, number>>): void {
  const { message, codes, perTenant } = REFUSAL_LINES[line];
  const tallyKey = perTenant ? `${line}#${key.tenantId}` : `${line}#${key.tenantId}#${key.resource}`;
  // Every code the line reports, 0 too.
  const due = refusals.note(tallyKey, deps.now(), Object.fromEntries(codes.map((code) => [code, counts[code] ?? 0])));
  if (!due) return;
  deps.logger.warn(message, {
    tenant: key.tenantId,
    resource: key.resource,
    ...due,
    ...(line === 'limit' && { rate_per_second: deps.config.objectRatePerSecond, queue_cap: deps.config.objectQueueCap }),
  });
}

/**
 * How often a container adds what it refused of an object's events to the object's reject
 * counters (QueueStore.noteRejected, shown by GET /v1/admin/queues): at most once a second
 * per object, so that a flood of refused requests costs the object's partition a write a
 * second from each container, not one a request.
 */
const REJECT_COUNT_INTERVAL_MS = 1_000;
/** Per object, what this container refused and has not added to its counters yet, and when it last did. */
const unwrittenRejects = new Map<string, { counts: Record<RejectReason, number>; writtenAt: number }>();

/**
 * Adds `refused` (none: only what is owed) to what the container owes the object's reject
 * counters, and writes what it owes once a second has passed since its last write. Called
 * for every object of a request, refused or not, so that the refusals of an object's last
 * second in this container are written with its next request here. A failed write is owed
 * still; what a container owes when it ends is lost (EventsRejected counts it all).
 */
async function countRejected(deps: IngestDeps, key: ObjectKey, refused: Readonly<Record<string, number>> | undefined): Promise<void> {
  const name = `${key.tenantId}#${key.resource}`;
  let owed = unwrittenRejects.get(name);
  if (!owed) {
    if (!refused) return;
    if (unwrittenRejects.size >= 10_000) unwrittenRejects.clear();
    owed = { counts: { rate_limited: 0, queue_full: 0 }, writtenAt: Number.NEGATIVE_INFINITY };
    unwrittenRejects.set(name, owed);
  }
  for (const reason of LIMIT_CODES) owed.counts[reason] += refused?.[reason] ?? 0;
  const now = deps.now();
  if (now - owed.writtenAt < REJECT_COUNT_INTERVAL_MS) return;
  const counts = owed.counts;
  if (counts.rate_limited + counts.queue_full === 0) {
    unwrittenRejects.delete(name);
    return;
  }
  owed.counts = { rate_limited: 0, queue_full: 0 };
  owed.writtenAt = now;
  try {
    await deps.queues.noteRejected(key, counts, now);
  } catch (error) {
    for (const reason of LIMIT_CODES) owed.counts[reason] += counts[reason];
    deps.logger.warn("An object's reject counters not updated; added with its next write", {
      tenant: key.tenantId,
      resource: key.resource,
      error,
    });
  }
}

function conflict(): EventResult {
  return rejected('conflict', 'An event with this id is being accepted by another request; send it again shortly.');
}

/**
 * A key sent again with another event (resource, parents, type or data not the same) is
 * refused, as Stripe refuses a key reused with other parameters: answering it as a
 * duplicate would tell the producer that an event was stored that never was.
 */
function reusedKey(): EventResult {
  return rejected(
    'invalid_request',
    'This id (idempotency key) was already used for a different event within the retention period; send a new event with a new id.',
  );
}

/**
 * Claims an event's idempotency key, or answers the event from the key's record: a
 * duplicate of the original event once that is stored, a conflict while another
 * request is accepting it. A claim abandoned after its event was given a slot (its
 * ingest gone for longer than the grace, perhaps after storing the event, perhaps
 * before) is settled first, by voiding that slot unless the event is in it: the void
 * also keeps the event from being stored there later. Stored: the key is confirmed
 * with the original id and this event is its duplicate, so a repeated key is never
 * delivered twice. Not stored (and now never to be): this event takes the key over.
 */
async function claimKey(deps: IngestDeps, tenantId: string, input: EventInput, eventId: string): Promise<EventResult | 'claimed'> {
  const key = input.idempotencyKey as string;
  const fingerprint = eventFingerprint(input);
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const claim = await deps.idempotency.claim(tenantId, key, eventId, deps.now(), fingerprint);
    if (claim.claimed) return 'claimed';
    // A record from before fingerprints were kept is taken for the same event.
    const sameEvent = claim.fingerprint === undefined || claim.fingerprint === fingerprint;
    if (claim.state === 'accepted') return sameEvent ? { id: claim.eventId, status: 'duplicate' } : reusedKey();
    if (claim.state === 'pending') return sameEvent ? conflict() : reusedKey();
    const { resource, slot, reservedAt } = claim.reservation;
    const found = await deps.queues.settleSlot({ tenantId, resource }, slot, reservedAt);
    deps.logger.info('Settled an abandoned idempotency key', { tenant: tenantId, resource, slot, found });
    if (found === 'stored') {
      // Confirmed for the next retries; this answer does not depend on it.
      await deps.idempotency
        .confirm(tenantId, key, claim.eventId)
        .catch((error: unknown) => deps.logger.error('Idempotency record not settled', { tenant: tenantId, accepted: true, error }));
      return sameEvent ? { id: claim.eventId, status: 'duplicate' } : reusedKey();
    }
    if (await deps.idempotency.takeOver(tenantId, key, claim.eventId, eventId, deps.now(), fingerprint)) return 'claimed';
    // Another retry settled the key first: its record now answers this one.
  }
  return conflict();
}

interface Pending {
  readonly index: number;
  readonly input: EventInput;
  /** Made up front for an idempotency key's claim; otherwise only for an admitted event. */
  readonly eventId: string | undefined;
}

export async function publish(deps: IngestDeps, tenantId: string, inputs: readonly EventInput[]): Promise<PublishOutcome> {
  const results: EventResult[] = new Array(inputs.length);
  let retryAfterMs = 0;

  // Idempotency keys first: a repeated key is answered from its record and admitted nowhere.
  const claimed: Pending[] = [];
  // DynamoDB refusing a claim, a reserve or a write of events: the storage is failing (see the end).
  const storageErrors: unknown[] = [];
  // By resource, the first event whose key could not be claimed.
  const firstUnclaimed = new Map<string, number>();
  await Promise.all(
    inputs.map(async (input, index) => {
      if (input.idempotencyKey !== undefined) {
        const eventId = deps.newEventId();
        const claim = await claimKey(deps, tenantId, input, eventId).catch((error: unknown) => {
          // Its key could not be claimed: this event is not stored; the other objects go on.
          deps.logger.error('Idempotency claim failed', { tenant: tenantId, error });
          storageErrors.push(error);
          firstUnclaimed.set(input.resource, Math.min(index, firstUnclaimed.get(input.resource) ?? index));
          return notStored();
        });
        if (claim === 'claimed') claimed.push({ index, input, eventId });
        else results[index] = claim;
        return;
      }
      claimed.push({ index, input, eventId: undefined });
    }),
  );
  claimed.sort((a, b) => a.index - b.index);

  const byObject = new Map<string, Pending[]>();
  for (const pending of claimed) {
    // Sent again, the event not stored would come after its object's later events: they
    // are not stored either (their keys are given back below), so the order holds.
    if (pending.index > (firstUnclaimed.get(pending.input.resource) ?? inputs.length)) {
      results[pending.index] = notStored();
      continue;
    }
    const list = byObject.get(pending.input.resource) ?? [];
    list.push(pending);
    byObject.set(pending.input.resource, list);
  }
  // Reserve on every object first, then store the events of all of them in one batched
  // write (not a write per object), then ring the doorbells of the objects this flipped.
  const admissions = await Promise.all(
    [...byObject].map(async ([resource, pendings]) => ({
      pendings,
      // An object whose reserve failed (DynamoDB erring) answers its events as not stored;
      // the others go on to be written and rung, so none of them is left scheduled unrung.
      admission: await reserveObject(deps, { tenantId, resource }, pendings).catch((error: unknown) => {
        deps.logger.error('Reserve failed', { tenant: tenantId, resource, error });
        storageErrors.push(error);
        return { outcome: { results: pendings.map(() => notStored()), retryAfterMs: 0 } };
      }),
    })),
  );
  const reserved = admissions.flatMap(({ admission }) => ('reservation' in admission ? [admission] : []));
  const unstored = await storeEvents(deps, reserved, await noteReservations(deps, tenantId, reserved, storageErrors), storageErrors);
  const outcomes = await Promise.all(
    admissions.map(({ admission }) => ('reservation' in admission ? finishObject(deps, admission, unstored) : admission.outcome)),
  );
  admissions.forEach(({ pendings }, i) => {
    const outcome = outcomes[i] as ObjectOutcome;
    retryAfterMs = Math.max(retryAfterMs, outcome.retryAfterMs);
    pendings.forEach((pending, k) => {
      results[pending.index] = outcome.results[k] as EventResult;
    });
  });

  // Settle the idempotency records: confirmed when accepted, given back when the event
  // is known not to be stored. A record left pending (this ingest dies, or a write here
  // fails) answers a retry with conflict until ingestGraceMs; after that the retry's
  // claim settles it from the slot it names, if any (see claimKey).
  await Promise.all(
    claimed.map(async ({ index, input, eventId }) => {
      if (input.idempotencyKey === undefined || eventId === undefined) return;
      const accepted = results[index]?.status === 'accepted';
      // Its slot could not be voided, so its event may yet be there: not given back.
      if (!accepted && unstored.get(eventId) === 'unknown') return;
      const settle = accepted
        ? deps.idempotency.confirm(tenantId, input.idempotencyKey, eventId)
        : deps.idempotency.release(tenantId, input.idempotencyKey, eventId);
      await settle.catch((error: unknown) => deps.logger.error('Idempotency record not settled', { tenant: tenantId, accepted, error }));
    }),
  );
  // Nothing answered stored and a claim, a reserve or the write of the reserved events
  // failed: the storage is failing, and the request is answered as a whole (500, what the
  // ingest-5xx alarm watches), as before any write. A 202 whose every event is internal
  // would leave on-call unpaged. (An event left `unknown`, its write failed and neither its
  // read nor its void going through, may be stored and delivered: its key, left pending,
  // answers a retry.)
  if (storageErrors.length > 0 && results.every((r) => r.status === 'rejected')) throw storageErrors[0];

  // One data point per outcome and request, however many events it had.
  let accepted = 0;
  let duplicates = 0;
  const rejectedBy = new Map<string, number>();
  // The objects whose events were refused for a limit or their key, named now and then in the log (see noteRefusals).
  const refusedBy = new Map<string, { line: RefusalLine; resource: string; counts: Record<string, number> }>();
  results.forEach((r, index) => {
    if (r.status === 'accepted') accepted++;
    else if (r.status === 'duplicate') duplicates++;
    else {
      const code = (r as RejectedResult).error.code;
      rejectedBy.set(code, (rejectedBy.get(code) ?? 0) + 1);
      const line = REFUSAL_LINE_OF.get(code);
      if (line) {
        const resource = (inputs[index] as EventInput).resource;
        const refused = refusedBy.get(`${line}#${resource}`) ?? { line, resource, counts: {} };
        refused.counts[code] = (refused.counts[code] ?? 0) + 1;
        refusedBy.set(`${line}#${resource}`, refused);
      }
    }
  });
  deps.metrics.count('EventsAccepted', accepted);
  if (duplicates > 0) deps.metrics.count('EventsDuplicate', duplicates);
  for (const [reason, n] of rejectedBy) deps.metrics.count('EventsRejected', n, { reason });
  const limited = (r: EventResult) => r.status === 'rejected' && LIMIT_CODES.has((r as RejectedResult).error.code as RejectReason);
  for (const { line, resource, counts } of refusedBy.values()) noteRefusals(deps, line, { tenantId, resource }, counts);
  const resources = new Set(inputs.map((input) => input.resource));
  await Promise.all(
    [...resources].map((resource) => countRejected(deps, { tenantId, resource }, refusedBy.get(`limit#${resource}`)?.counts)),
  );
  // Every event rejected for a limit is answered with when to send it again, in a 202
  // that accepted others as much as in a 429: the per-event answer says to wait for it.
  return {
    results,
    httpStatus: results.every(limited) ? 429 : 202,
    retryAfterSeconds: results.some(limited) ? Math.max(1, Math.ceil(retryAfterMs / 1000)) : undefined,
  };
}

interface ObjectOutcome {
  readonly results: EventResult[];
  readonly retryAfterMs: number;
}

/** An object's reservation, with the events it admitted (not yet stored). */
interface Reserved {
  readonly key: ObjectKey;
  readonly reservation: Reservation;
  readonly events: AcceptedEvent[];
  readonly pendingCount: number;
  readonly reason: RejectReason | undefined;
  readonly retryAfterMs: number;
  readonly reservedAt: number;
}

async function reserveObject(
  deps: IngestDeps,
  key: ObjectKey,
  pendings: readonly Pending[],
): Promise<Reserved | { outcome: ObjectOutcome }> {
  const { config } = deps;
  const objectKey = `${key.tenantId}#${key.resource}`;
  const now = deps.now();
  const createdAt = new Date(now).toISOString();
  const ids = pendings.map((p) => p.eventId);
  const idOf = (k: number) => {
    ids[k] ??= deps.newEventId();
    return ids[k];
  };
  const step = await oneAtATime(objectKey, () => reserveOn(deps, key, objectKey, pendings, now, idOf));
  if ('outcome' in step) return step;
  const { reservation, want, reason, retryAfterMs } = step;
  if (reservation.depth > 0.8 * config.objectQueueCap) deps.metrics.count('ObjectQueueNearCap');
  const events: AcceptedEvent[] = pendings
    .slice(0, Math.min(want, pendings.length))
    .map((p, i) => ({ id: idOf(i), slot: reservation.firstSlot + i, input: p.input, createdAt }));
  return { key, reservation, events, pendingCount: pendings.length, reason, retryAfterMs, reservedAt: now };
}

/**
 * The events a request reserved slots for but did not store, by id: `voided` when
 * their slot is void (they will never be delivered), `unknown` when not even the void
 * could be written (their item may yet be there).
 */
type Unstored = ReadonlyMap<string, 'voided' | 'unknown'>;

/**
 * Names each keyed event's slot in its key's record (one write per keyed event),
 * before the event is stored. A retry that finds the key abandoned past the ingest
 * grace then knows where the event would be: with no slot named, none was stored.
 * (Which is why a keyed event is never kept inline: the reserving write would store
 * it before its slot could be named.) Answers the events whose slot could not be
 * named: they must not be stored.
 */
async function noteReservations(
  deps: IngestDeps,
  tenantId: string,
  reserved: readonly Reserved[],
  storageErrors: unknown[],
): Promise<ReadonlySet<string>> {
  const unnoted = new Set<string>();
  await Promise.all(
    reserved.flatMap((r) =>
      r.events.map(async (event) => {
        const key = event.input.idempotencyKey;
        if (key === undefined || r.reservation.inlined) return;
        const reservation = { resource: r.key.resource, slot: event.slot, reservedAt: r.reservedAt };
        const noted = await deps.idempotency.noteReservation(tenantId, key, event.id, reservation).catch((error: unknown) => {
          deps.logger.error('Idempotency record could not name its slot', { tenant: tenantId, resource: r.key.resource, error });
          storageErrors.push(error);
          return false;
        });
        if (!noted) unnoted.add(event.id);
      }),
    ),
  );
  return unnoted;
}

/**
 * Stores the reserved events that the reserving write did not keep on the meta item,
 * for all of a request's objects in one batched write, except those whose key could
 * not name their slot. The objects whose events were not all stored are settled (see
 * settleObject), and the events not stored answered as such. The write fails only once
 * none of its batches can still write (see batchWrite), so no put lands on a slot after
 * its void.
 */
async function storeEvents(
  deps: IngestDeps,
  reserved: readonly Reserved[],
  unnoted: ReadonlySet<string>,
  storageErrors: unknown[],
): Promise<Unstored> {
  const toWrite = reserved.filter((r) => !r.reservation.inlined && r.events.length > 0);
  const writes = toWrite
    .map((r) => ({ key: r.key, events: r.events.filter((e) => !unnoted.has(e.id)), reservedAt: r.reservedAt }))
    .filter((w) => w.events.length > 0);
  let failed = false;
  if (writes.length > 0) {
    try {
      await deps.queues.writeEventsOf(writes);
    } catch (error) {
      deps.logger.error('Event write failed after reservation', { tenant: writes[0]?.key.tenantId, objects: writes.length, error });
      storageErrors.push(error);
      failed = true;
    }
  }
  const unstored = new Map<string, 'voided' | 'unknown'>();
  await Promise.all(
    toWrite.map(async (r) => {
      if (!failed && !r.events.some((e) => unnoted.has(e.id))) return;
      // With the write done, every event was written but those left out; after a failure, read.
      const written = failed
        ? await deps.queues
            .writtenSlots(r.key, r.reservation.firstSlot, r.reservation.firstSlot + r.events.length - 1)
            .catch((error: unknown) => {
              deps.logger.error('Slots could not be read after a failed write', {
                tenant: r.key.tenantId,
                resource: r.key.resource,
                error,
              });
              return undefined;
            })
        : new Set(r.events.filter((e) => !unnoted.has(e.id)).map((e) => e.slot));
      const settled = written === undefined ? await settleUnread(deps, r) : await settleObject(deps, r, written);
      for (const [id, state] of settled) unstored.set(id, state);
    }),
  );
  return unstored;
}

/**
 * Settles the slots of an object whose written slots could not be read. Withdrawing is
 * safe only behind a slot known to be empty (where the distributor waits), and none is
 * known: a turn under way may have published any written one. So each slot is voided
 * only if it is still empty (conditionally), and a written one is answered accepted, even
 * if an earlier one of the request was not stored (its event, sent again, then comes
 * after it: out of order, as when a withdrawal fails). Not even that could be written:
 * every event is unknown (answered as not stored; its idempotency key, left pending,
 * keeps a retry from delivering it twice).
 */
async function settleUnread(deps: IngestDeps, r: Reserved): Promise<Unstored> {
  const unstored = new Map<string, 'voided' | 'unknown'>();
  const found = await deps.queues
    .voidSlots(
      r.key,
      r.events.map((e) => e.slot),
      r.reservedAt,
    )
    .catch(() => undefined);
  for (const e of r.events) {
    if (found === undefined) unstored.set(e.id, 'unknown');
    else if (!found.has(e.slot)) unstored.set(e.id, 'voided');
  }
  return unstored;
}

/**
 * Settles the slots of an object whose events were not all stored, keeping the object's
 * order. The events answered as not stored are sent again, and come after whatever of
 * the object was accepted, so none of its later events in this request may be accepted:
 * from the first slot left empty (the cut) on, every event is answered as not stored.
 * The slots after the cut are voided first, their events withdrawn where they were
 * written (the distributor waits at the empty cut, so it cannot have reached them), and
 * the cut's own slot last, conditionally: a slot once written is never voided, and its
 * event is answered accepted. A withdrawal that fails leaves its event to be delivered,
 * so it is answered accepted, out of order only then.
 */
async function settleObject(deps: IngestDeps, r: Reserved, written: ReadonlySet<number>): Promise<Unstored> {
  const unstored = new Map<string, 'voided' | 'unknown'>();
  const cut = r.events.findIndex((e) => !written.has(e.slot));
  if (cut < 0) return unstored;
  const settle = async (e: AcceptedEvent, work: Promise<boolean>) => {
    // Not even the void could be written: answered as not stored (a retry may
    // duplicate, unless its idempotency key, left pending, tells it otherwise).
    const voided = await work.catch(() => undefined);
    if (voided === undefined) {
      if (!written.has(e.slot)) unstored.set(e.id, 'unknown');
    } else if (voided) unstored.set(e.id, 'voided');
  };
  // Each slot settled for itself: one void refused (DynamoDB throttling it, say) must
  // not leave the others unknown.
  await Promise.all(
    r.events.slice(cut + 1).map((e) =>
      settle(
        e,
        deps.queues.withdrawSlot(r.key, e.slot, r.reservedAt).then(() => true),
      ),
    ),
  );
  const first = r.events[cut] as AcceptedEvent;
  await settle(
    first,
    deps.queues.voidSlots(r.key, [first.slot], r.reservedAt).then((found) => !found.has(first.slot)),
  );
  return unstored;
}

async function finishObject(deps: IngestDeps, reserved: Reserved, unstored: Unstored): Promise<ObjectOutcome> {
  const { key, reservation, events } = reserved;
  if (reservation.flipped) {
    // Only the ingest that flipped idle → scheduled rings, so a hot object has one
    // doorbell in flight however fast it is written. The events are stored whether or
    // not the ring goes out: if it fails, the reconciler rings the object once it has
    // been scheduled for stuckAfterMs with no turn; answering 500 instead would only
    // make the producer send them again.
    try {
      await deps.doorbell.ring(key, `s${reservation.firstSlot}`, {
        quiet: reservation.inlined,
        ...(reservation.quiet && { snapshot: reservation.quiet }),
      });
      deps.metrics.count('DoorbellsRung', 1, { by: 'ingest' });
    } catch (error) {
      deps.metrics.count('DoorbellRingsFailed');
      deps.logger.error('Doorbell ring failed; the reconciler will ring', { tenant: key.tenantId, resource: key.resource, error });
    }
  }
  const results: EventResult[] = events.map((e) =>
    reservation.inlined || !unstored.has(e.id) ? { id: e.id, status: 'accepted' } : notStored(),
  );
  for (let i = events.length; i < reserved.pendingCount; i++) results.push(limitRejection(reserved.reason ?? 'rate_limited', deps.config));
  return { results, retryAfterMs: reserved.retryAfterMs };
}

/**
 * The reserving writes on one object, one request at a time in this container.
 * Requests that race for a busy object's next tokens would each try a write that
 * all but one lose, then read the meta item; in turn, the later ones see the tat
 * the first one left and are answered without DynamoDB.
 */
const reserving = new Map<string, Promise<unknown>>();

async function oneAtATime<T>(objectKey: string, work: () => Promise<T>): Promise<T> {
  const before = reserving.get(objectKey);
  const run = before ? before.then(work) : work();
  const settled = run.then(
    () => undefined,
    () => undefined,
  );
  reserving.set(objectKey, settled);
  try {
    return await run;
  } finally {
    if (reserving.get(objectKey) === settled) reserving.delete(objectKey);
  }
}

type ReserveStep =
  | { readonly outcome: ObjectOutcome }
  | { readonly reservation: Reservation; readonly want: number; readonly reason: RejectReason | undefined; readonly retryAfterMs: number };

async function reserveOn(
  deps: IngestDeps,
  key: ObjectKey,
  objectKey: string,
  pendings: readonly Pending[],
  now: number,
  idOf: (k: number) => string,
): Promise<ReserveStep> {
  const { queues, config } = deps;
  const limits: AdmissionLimits = { cap: config.objectQueueCap, ratePerSecond: config.objectRatePerSecond, burst: config.objectBurst };
  let want = Math.min(pendings.length, limits.burst);
  let reason: RejectReason | undefined = want < pendings.length ? 'rate_limited' : undefined;
  let retryAfterMs = 0;
  const knownTat = lastTat.get(objectKey);
  let busy = (knownTat ?? 0) > now;
  const refuseAll = (why: RejectReason, ms: number): ReserveStep => ({
    outcome: { results: pendings.map(() => limitRejection(why, config)), retryAfterMs: Math.max(ms, 1_000) },
  });
  if (knownTat !== undefined) {
    // The tat this container last saw can only be behind the real one, so when it
    // already leaves too few tokens, there are too few: refuse without DynamoDB. It
    // knows nothing of the depth, so it judges the rate alone: the reserving write
    // checks the cap, and a refusal for room must say queue_full, not rate_limited.
    const local = decideAdmission({ depth: 0, tat: knownTat }, want, { ...limits, cap: Number.POSITIVE_INFINITY }, now);
    if (local.admit === 0) {
      deps.metrics.count('RejectedLocally', pendings.length);
      return refuseAll('rate_limited', local.retryAfterMs);
    }
    if (local.admit < want) {
      // No more than that can enter: asking for all of them would only be refused.
      want = local.admit;
      reason = 'rate_limited';
      retryAfterMs = local.retryAfterMs;
    }
  }
  let reservation: Reservation | undefined;
  const only = pendings.length === 1 ? pendings[0] : undefined;
  const quiet = !busy && (knownTat === undefined || knownTat < now - RECENT_MS);
  try {
    if (only && quiet && fitsInline(only.input) && only.input.idempotencyKey === undefined) {
      // A single small event for an object that is likely idle: try to keep it on the
      // meta item, which stores it in the reserving write (refused if anything is pending).
      // Not one with an idempotency key: its key must name its slot before it is stored.
      const createdAt = new Date(now).toISOString();
      reservation = await queues.reserve(key, 1, limits, now, false, { id: idOf(0), input: only.input, createdAt });
    }
    for (let attempt = 0; attempt < MAX_RESERVE_ATTEMPTS && want > 0 && !reservation; attempt++) {
      reservation = await queues.reserve(key, want, limits, now, busy);
      if (reservation) break;
      // Refused: learn why and how many may enter, then try again with that many.
      const meta = await queues.readMeta(key);
      const decision = decideAdmission({ depth: meta?.depth ?? 0, tat: meta?.tat }, want, limits, now);
      busy = (meta?.tat ?? 0) > now;
      rememberTat(objectKey, meta?.tat);
      if (decision.reason) {
        reason = decision.reason;
        retryAfterMs = decision.retryAfterMs;
      }
      want = decision.admit;
    }
  } catch (error) {
    if (!(error instanceof Error) || !STORAGE_THROTTLES.has(error.name)) throw error;
    // The object's partition is past DynamoDB's throughput: the producer must slow down.
    deps.metrics.count('StorageThrottled');
    return refuseAll('rate_limited', 1_000);
  }
  rememberTat(objectKey, reservation?.tat);
  if (!reservation) return refuseAll(reason ?? 'rate_limited', retryAfterMs);
  return { reservation, want, reason, retryAfterMs };
}

function rememberTat(objectKey: string, tat: number | undefined): void {
  if (tat === undefined) return;
  if (lastTat.size >= TAT_MEMORY && !lastTat.has(objectKey)) lastTat.clear();
  lastTat.set(objectKey, tat);
}
