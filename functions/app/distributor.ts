/**
 * The distributor's turn (SPEC §2): take the object's lease, drain a bounded
 * number of events in slot order, number them, fan them out to the webhooks on the
 * resource and its parents, and either let the object go idle or ring again.
 */
import type { Doorbell } from '../adapters/doorbell.ts';
import type { QueueStore, QuietSnapshot } from '../adapters/queue-store.ts';
import type { StreamStore } from '../adapters/stream-store.ts';
import type { SubscriptionCache } from '../adapters/subscription-cache.ts';
import type { SwitchReader } from '../adapters/switch-store.ts';
import type { SluiceConfig } from '../core/config.ts';
import { chunkByBytes, deliveryId, planDeliveries, subscribedResources } from '../core/deliveries.ts';
import { FencedOutError, LeaseHeldError } from '../core/errors.ts';
import { derivedId } from '../core/ids.ts';
import type { Lane } from '../core/lanes.ts';
import type { DeliveredEvent, DeliveryMessage, GapMarker, ObjectKey, PendingEvent, Subscriber } from '../core/model.ts';
import { STREAM_LATE_MS, streamPosition } from '../core/stream-token.ts';
import { actionForObject } from '../core/switches.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';
import {
  assignSeq,
  chunkAgain,
  type PendingItem,
  planChunk,
  type QueueMeta,
  quietTurnAllowed,
  skippedRanges,
  snapshotHoldMs,
  snapshotTrusted,
  type TurnRecord,
  turnMayContinue,
} from '../core/turn.ts';
import { DeliveryOutbox, type DeliverySink } from './delivery-outbox.ts';

export interface SubscriptionSource {
  onResource(tenantId: string, resource: string): Promise<readonly Subscriber[]>;
}

export interface DistributorDeps {
  readonly queues: QueueStore;
  readonly subscriptions: SubscriptionSource;
  readonly deliveries: DeliverySink;
  readonly switches: SwitchReader;
  /** Stream sinks: absent where no stream can exist (tests of other mechanisms). */
  readonly streams?: Pick<StreamStore, 'active' | 'append'>;
  readonly doorbell: Pick<Doorbell, 'ring'>;
  /** Keeps lookups between turns, checked against the tenant's subscriptions version. */
  readonly lookupCache?: LookupSource;
  readonly config: SluiceConfig;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
}

export type TurnOutcome =
  | { readonly outcome: 'idle' | 'rerung'; readonly distributed: number }
  | { readonly outcome: 'lease_held' | 'fenced_out' | 'paused'; readonly distributed: number };

const CHUNK_SIZE = 100;

/**
 * The most parents an object keeps, while a drop switch discards its events, for the
 * gap marker at the lift (see `#keepForMarker`): some 40 KB of names at most on the
 * meta item, which every ingest writes. Without a bound, events naming thousands of
 * parents each with a stream (a poll starts one) grew it past DynamoDB's 400 KB: every
 * drop commit failed, and the object's turn with it, doorbell after doorbell, its
 * events neither dropped nor delivered. Parents past it get no marker (logged).
 */
export const MAX_DROPPED_PARENTS = 200;
/** How many parents of a dropped chunk are looked up at once (see `#keepForMarker`). */
const DROP_LOOKUP_SLICE = 100;
const STREAM_APPEND_TRIES = 3;
/**
 * The most bytes of events one stream write stamps at once. A stream's log is one
 * partition, which DynamoDB writes at about 1 MB a second, shared by every turn that
 * appends to the stream: a chunk of large events written under one stamp took longer
 * than STREAM_LATE_MS by its size alone, was written again, as late, and failed its
 * turn (its webhooks' deliveries too) until the load fell.
 */
const STREAM_PIECE_BYTES = 128 * 1024;
/**
 * How long a turn waits for an ingest between its two writes (a slot reserved, its event
 * not yet written): 20 ms, then twice as long each time in a row, up to MAX_WAIT_FOR_INGEST_MS.
 * A write comes within milliseconds; one that has not come for a while most likely never
 * will (its ingest died), and the slot is skipped after the ingest grace: a read every 20 ms
 * until then was about a hundred reads a turn for nothing.
 */
const WAIT_FOR_INGEST_MS = 20;
const MAX_WAIT_FOR_INGEST_MS = 320;
/**
 * A chunk published before its commit keeps no record of which events it numbered: a
 * holder that dies before the commit leaves the next one to plan it again, later. Had
 * one of its events expired by then, the next holder would number the rest from that
 * event's seq, so a seq already published would go to another event. A chunk with an
 * event this close to its expiry is therefore committed first, with its plan's time
 * (see TurnRecord.plannedAt), and published after; a quiet turn, which publishes its
 * event before its one write, leaves such an event to an ordinary turn. The next holder
 * comes after the doorbell's visibility timeout or the reconciler's ring, within minutes.
 */
const EXPIRY_MARGIN_MS = 86_400_000;

/**
 * The retention period a turn judges its missing slots by (planChunk: TTL may have
 * deleted them): the shorter of this config's and the one the ingest that scheduled the
 * object wrote its events with. An item keeps the TTL it was written with, so after
 * retentionDays was raised (a paused backlog given more time), DynamoDB still deletes
 * the events written before at the old period's end; judged by the new one, their slots
 * passed for slots no ingest wrote, and the accepted events were consumed with no gap
 * marker. A slot an ingest left empty, in a backlog older than the shorter period, is
 * announced with them (a marker that counts one more, never one fewer).
 */
function missingRetentionMs(meta: Pick<QueueMeta, 'scheduledRetentionMs'>, retentionDays: number): number {
  return Math.min(retentionDays * 86_400_000, meta.scheduledRetentionMs ?? Number.POSITIVE_INFINITY);
}

/** The later of two times, either of which may be unknown. */
function laterOf(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}

function toDelivered(event: PendingEvent & { seq: number }): DeliveredEvent {
  return {
    id: event.id,
    seq: event.seq,
    resource: event.resource,
    parents: event.parents,
    type: event.type,
    data: event.data,
    created_at: event.createdAt,
  };
}

/** Where a turn's lookups come from: answers kept for a subscriptions version. */
type LookupSource = Pick<SubscriptionCache, 'version' | 'webhooksOn' | 'streamActive' | 'refreshed'>;

/** Without a cache: every turn asks the stores (and the version is always 0). */
function uncachedLookups(deps: DistributorDeps): LookupSource {
  return {
    version: async () => 0,
    webhooksOn: (tenantId, resource) => deps.subscriptions.onResource(tenantId, resource),
    streamActive: async (tenantId, resource, _version, now) => (deps.streams ? deps.streams.active(tenantId, resource, now) : false),
    refreshed: async () => undefined,
  };
}

/**
 * What a chunk looks up about the resources its events touch, each once: the
 * webhooks on a resource, and whether a stream on it is active. The tenant's
 * subscriptions version is read once, at the first lookup.
 */
class TurnLookups {
  readonly #webhooks = new Map<string, Promise<readonly Subscriber[]>>();
  readonly #streams = new Map<string, Promise<boolean>>();
  readonly #source: LookupSource;
  readonly #tenantId: string;
  readonly #now: () => number;
  #version: Promise<number> | undefined;

  constructor(source: LookupSource, tenantId: string, now: () => number) {
    this.#source = source;
    this.#tenantId = tenantId;
    this.#now = now;
  }

  webhooksOn(resource: string): Promise<readonly Subscriber[]> {
    return this.#once(this.#webhooks, resource, (version) => this.#source.webhooksOn(this.#tenantId, resource, version, this.#now()));
  }

  streamActive(resource: string): Promise<boolean> {
    return this.#once(this.#streams, resource, (version) => this.#source.streamActive(this.#tenantId, resource, version, this.#now()));
  }

  #once<T>(answers: Map<string, Promise<T>>, resource: string, ask: (version: number) => Promise<T>): Promise<T> {
    let pending = answers.get(resource);
    if (!pending) {
      this.#version ??= this.#source.version(this.#tenantId);
      pending = this.#version.then(ask);
      answers.set(resource, pending);
    }
    return pending;
  }
}

export class Distributor {
  readonly #deps: DistributorDeps;
  readonly #lookups: LookupSource;
  /** The last time a stream append was stamped with (see `#stamp`). */
  #lastStamp = 0;

  constructor(deps: DistributorDeps) {
    this.#deps = deps;
    this.#lookups = deps.lookupCache ?? uncachedLookups(deps);
  }

  /** Waits for the cached lookups being made again behind the turns (see SubscriptionCache). */
  lookupsRefreshed(): Promise<void> {
    return this.#lookups.refreshed();
  }

  /** An outbox for the turns of one invocation, which merges their deliveries per webhook. */
  newOutbox(): DeliveryOutbox {
    return new DeliveryOutbox(this.#deps.deliveries);
  }

  /**
   * Runs one turn for the object a doorbell names. `owner` identifies this holder in
   * the lease; `outbox`, shared by the turns of one invocation, sends its deliveries.
   */
  async runTurn(
    key: ObjectKey,
    owner: string,
    options: {
      freshSwitches?: boolean;
      quiet?: boolean;
      snapshot?: QuietSnapshot;
      outbox?: DeliverySink;
      shared?: boolean;
      lane?: Lane;
    } = {},
  ): Promise<TurnOutcome> {
    const { queues, config, now } = this.#deps;
    // A turn that rings again rings in its doorbell's lane: a tenant's objects in the bulk
    // lane stay there, and an object never has doorbells in both lanes from its turns.
    const lane = options.lane ?? 'main';
    const sink = options.outbox ?? this.#deps.deliveries;
    let distributed = 0;
    try {
      if (options.quiet) {
        const quiet = await this.#quietTurn(key, sink, options.freshSwitches === true, options.snapshot, lane);
        if (quiet) return quiet;
      }
      // The meta item as the lease read it, or as a commit that kept the lease left it.
      let meta = await queues.acquireLease(key, owner, now(), config.leaseMs);
      const subscriptions = new TurnLookups(this.#lookups, key.tenantId, now);
      if (meta.turn) distributed += await this.#republish(key, meta.turn, subscriptions, sink);
      const switches = options.freshSwitches ? await this.#deps.switches.refresh() : await this.#deps.switches.current();
      let action = actionForObject(switches, key.tenantId, key.resource);
      if ((action === 'pause' || action === 'drop') && !options.freshSwitches) {
        // A paused object stays scheduled with no doorbell, and only a lift rings it: a
        // cache that still shows a pause lifted since (by up to switchCacheMs) would leave
        // it so until the reconciler took it for stuck, minutes on. So a pause is read
        // afresh before it is obeyed, once per ring of a paused object: ingests ring it
        // no more while it waits, and the reconciler leaves it alone. So is a drop: events
        // dropped under one lifted since would leave the object idle owing their marker,
        // which nothing but its next event or the reconciler would ring it for.
        action = actionForObject(await this.#deps.switches.refresh(), key.tenantId, key.resource);
      }
      if (action === 'pause') {
        // Paused: leave the events where they are. Lifting the switch rings again.
        const end = await queues.finishTurn(key, meta.fence, now(), { paused: true });
        this.#deps.metrics.count('TurnsPaused');
        // A lift between the read above and that write rang the object, and that ring's turn
        // may have found this lease held and ended (one in the other lane, which FIFO does
        // not put behind this one): with nobody to ring it, the object would wait for the
        // reconciler. Read once more; lifted, ring it.
        if (end === 'pending' && actionForObject(await this.#deps.switches.refresh(), key.tenantId, key.resource) !== 'pause') {
          return this.#ended(key, `t${meta.fence}`, 'pending', distributed, lane);
        }
        return { outcome: 'paused', distributed };
      }
      if (action === undefined && meta.switchDropped > 0) {
        await this.#publishGapMarker(
          key,
          { dropped: meta.switchDropped, reason: 'switch_drop' },
          meta.cursor,
          meta.switchDroppedParents,
          subscriptions,
          sink,
        );
        await queues.clearSwitchDropped(key, meta.fence, meta.switchDropped);
      }
      // Looked up for a chunk published again or a marker, the answers are not kept for
      // the first chunk: a stream started meanwhile collects from its 412 on (see below).
      const looked = meta.turn !== undefined || (action === undefined && meta.switchDropped > 0);
      const startedAt = now();
      // A turn sharing its invocation with other objects ends sooner: their doorbells
      // are acknowledged only when the whole batch is done.
      const maxMs = options.shared ? Math.min(config.sharedTurnMaxMs, config.turnMaxMs) : config.turnMaxMs;
      const budget = { maxEvents: config.turnMaxEvents, maxMs };
      const retentionMs = missingRetentionMs(meta, config.retentionDays);
      // The period the last item a chunk consumed was written with: the next chunk's
      // missing slots at its start came after it (see planChunk).
      let beforeWrittenMs: number | undefined;
      let { cursor, seq } = meta;
      // An event kept on the meta item is the one at cursor + 1: the first chunk starts with it.
      let inline = meta.inline;
      // The earliest the slots after the cursor can have been reserved (see planChunk): when
      // the object was scheduled, or, later, the last slot a turn before this one consumed.
      // By `scheduledAt` alone, a turn that starts at a slot an earlier one stopped at (its
      // ingest between its writes, then dead) judged it by when a long pause began, and
      // announced it as an event TTL may have deleted.
      let floorAt = laterOf(meta.scheduledAt, meta.floorAt);
      let lookups = looked ? new TurnLookups(this.#lookups, key.tenantId, now) : subscriptions;
      // The parents kept for the drop's gap marker (only this lease's holder adds to them).
      const keptParents = new Set(meta.switchDroppedParents);
      const ownSnapshot = options.snapshot ? String(options.snapshot.stored.id) : undefined;
      let ingestWaits = 0;
      // Whether events are known to be left: the last chunk planned stopped short of them
      // (more to read, a slot still being written), or the write that kept the lease
      // found them. A turn out of time then ends pending without trying for idle.
      let left = false;
      // Set by the write that kept the lease: the events it found are planned even if the
      // turn's time ran out during that write (ringing again instead would have cost only
      // the release; now it would cost that write too).
      let found = false;
      while (found || turnMayContinue(budget, distributed, startedAt, now())) {
        found = false;
        // Only while the object owes no marker: ingest hands out no snapshot while it does,
        // and a drop's commit takes the inline event with it, so an inline event beside a
        // marker owed was reserved after that commit, and has no snapshot to wait out.
        const holdMs = action === 'drop' && meta.switchDropped === 0 ? snapshotHoldMs(inline, now(), ownSnapshot) : 0;
        if (holdMs > 0) {
          // A quiet doorbell queued behind this one may carry a snapshot of the inline
          // event, and its turn (its container may already see the switch lifted) would
          // publish the event from it: dropped now, it would be delivered and counted in
          // the gap marker too. Wait until no snapshot of it is trusted, within this
          // turn's time; if that runs out, the object is rung again.
          await this.#deps.sleep(Math.min(holdMs, startedAt + maxMs - now()));
          continue;
        }
        const limit = Math.min(CHUNK_SIZE, config.turnMaxEvents - distributed);
        const { items, readAll } = await this.#pending(key, cursor, meta.lastSlot, inline, limit);
        const plannedAt = now();
        const timing = { ingestGraceMs: config.ingestGraceMs, retentionMs, beforeWrittenMs };
        const plan = planChunk(items, { ...meta, cursor, scheduledAt: floorAt }, plannedAt, timing, limit, readAll);
        left = plan.waiting || !readAll || plan.cursor < meta.lastSlot;
        if (plan.take.length === 0 && plan.skipped === 0 && plan.expired === 0) {
          if (!plan.waiting) break;
          // An ingest is between its two writes: give it a moment within this turn.
          await this.#deps.sleep(Math.min(WAIT_FOR_INGEST_MS * 2 ** ingestWaits++, MAX_WAIT_FOR_INGEST_MS));
          continue;
        }
        ingestWaits = 0;
        const events = assignSeq(plan.take, seq).map(toDelivered);
        const consumed = plan.take.length + plan.skipped + plan.expired;
        const dropping = action === 'drop';
        // Expired events stand in a marker sent before the chunk is committed, so a holder
        // that dies in between leaves them to the next one (which marks them again). Under
        // a drop switch they are counted with the dropped ones, for the marker at its lift.
        if (plan.expired > 0 && !dropping) {
          await this.#publishGapMarker(key, { dropped: plan.expired, reason: 'retention' }, cursor, plan.expiredParents, lookups, sink);
        }
        // Everything known at the lease is in this chunk, and the object is not being
        // written right now (its rate tat is behind the clock): publish, then commit
        // and end the turn in one write. Later events are found by that write.
        // None of its events may expire before a holder that plans it again would come.
        const last =
          !dropping &&
          readAll &&
          !plan.waiting &&
          plan.cursor >= meta.lastSlot &&
          !((meta.tat ?? 0) > now()) &&
          !plan.take.some((item) => this.#nearExpiry(item, plannedAt));
        if (last) {
          await this.#publish(key, events, lookups, sink);
          distributed += events.length;
          // Events that came meanwhile fail the idle form of the write. A turn with time
          // left then keeps its lease and goes on with them, where ringing again would
          // cost a doorbell, an invocation and another lease.
          const state = await queues.commitLastChunk(
            key,
            meta.fence,
            cursor,
            { cursor: plan.cursor, seq: seq + events.length, consumed, removeInline: inline !== undefined, floorAt: plan.floorAt },
            now(),
            { keepLease: turnMayContinue(budget, distributed, startedAt, now()) },
          );
          this.#countConsumed(key, plan, false);
          if (typeof state === 'string') return this.#ended(key, `t${meta.fence}`, state, distributed, lane);
          meta = state.held;
          ({ cursor, seq, inline } = meta);
          floorAt = plan.floorAt;
          beforeWrittenMs = plan.lastWrittenMs;
          left = true;
          found = true;
          lookups = new TurnLookups(this.#lookups, key.tenantId, now);
          continue;
        }
        const droppedParents = dropping
          ? await this.#keepForMarker(key, keptParents, [...events.flatMap((e) => e.parents), ...plan.expiredParents], lookups)
          : [];
        await queues.commitChunk(key, meta.fence, cursor, {
          cursor: plan.cursor,
          seq: seq + events.length,
          consumed,
          // A dropped chunk is not recorded as a turn: there is nothing to publish again.
          turn: dropping
            ? undefined
            : {
                fromSlot: cursor + 1,
                toSlot: plan.cursor,
                firstSeq: seq + 1,
                plannedAt,
                skipped: skippedRanges(cursor + 1, plan.cursor, plan.take),
              },
          ...(dropping && { dropped: { count: events.length + plan.expired, parents: droppedParents } }),
          ...(inline && { inline }),
          floorAt: plan.floorAt,
        });
        inline = undefined;
        this.#countConsumed(key, plan, dropping);
        if (!dropping) await this.#publish(key, events, lookups, sink);
        cursor = plan.cursor;
        floorAt = plan.floorAt;
        beforeWrittenMs = plan.lastWrittenMs;
        seq += events.length;
        distributed += events.length;
        // The next chunk looks up again, from a fresh subscriptions version: a stream
        // started while this turn drains collects from the moment its 412 is answered,
        // so the rest of the turn (up to turnMaxMs) must append to it too.
        lookups = new TurnLookups(this.#lookups, key.tenantId, now);
      }
      return this.#ended(key, `t${meta.fence}`, await queues.finishTurn(key, meta.fence, now(), { left }), distributed, lane);
    } catch (error) {
      if (error instanceof LeaseHeldError) {
        // Another holder is draining this object and will ring again if events remain.
        this.#deps.metrics.count('LeaseConflicts');
        return { outcome: 'lease_held', distributed };
      }
      if (error instanceof FencedOutError) {
        this.#deps.metrics.count('FencedOut');
        return { outcome: 'fenced_out', distributed };
      }
      throw error;
    }
  }

  /**
   * The events after `cursor`: the inline one first, if any, then the slot items.
   * When the inline event is all that was reserved, there is nothing else to read.
   */
  async #pending(
    key: ObjectKey,
    cursor: number,
    lastSlot: number,
    inline: PendingItem | undefined,
    limit: number,
  ): Promise<{ items: PendingItem[]; readAll: boolean }> {
    if (inline && lastSlot <= cursor + 1) return { items: [inline], readAll: true };
    const read = await this.#deps.queues.readPending(key, cursor, limit, this.#deps.now());
    return inline ? { items: [inline, ...read.items], readAll: read.readAll } : read;
  }

  /**
   * A turn without a lease, for an object whose only pending event is kept on its
   * meta item (its ingest rang with `quiet`): read the meta item, publish the event
   * with the next seq, then commit it and end the turn in one write, on the
   * condition that the cursor has not moved and nobody holds the lease. One read
   * and one write instead of the lease, the commit and the slot read. Anything
   * else about the object (more events, a lease, a switch, a turn record, a drop
   * count, an expired event) and the caller runs an ordinary turn.
   */
  async #quietTurn(
    key: ObjectKey,
    sink: DeliverySink,
    freshSwitches: boolean,
    snapshot: QuietSnapshot | undefined,
    lane: Lane,
  ): Promise<TurnOutcome | undefined> {
    const { queues, now } = this.#deps;
    // The ingest's write saw the meta item as the read would (only a turn moves the
    // cursor and seq, and none ran on an idle object): its doorbell's snapshot spares
    // the read. A turn from an older doorbell of the group may have consumed the event
    // since: the same event with the same seq if it published it, and a drop turn leaves
    // it alone while the snapshot is trusted (see SNAPSHOT_TRUST_MS). A doorbell without
    // a snapshot (older, or from a write that could not tell), or received later, reads.
    const fromSnapshot = snapshot && queues.snapshotEvent(snapshot, now());
    let at: { cursor: number; seq: number; inline: PendingItem };
    if (snapshot && fromSnapshot && snapshotTrusted(fromSnapshot.reservedAt, now())) {
      at = { cursor: snapshot.cursor, seq: snapshot.seq, inline: fromSnapshot };
    } else {
      const meta = await queues.readMeta(key, now());
      const inline = meta?.inline;
      if (!meta || !inline || meta.lastSlot !== meta.cursor + 1 || !quietTurnAllowed(meta, now())) return undefined;
      at = { cursor: meta.cursor, seq: meta.seq, inline };
    }
    // An event near its expiry is committed before it is published, which takes a turn
    // with a lease (see EXPIRY_MARGIN_MS): published first, and its turn dead before the
    // write, it could expire before the next turn, which would give its seq to the next event.
    if (at.inline.expired || this.#nearExpiry(at.inline, now())) return undefined;
    const switches = freshSwitches ? await this.#deps.switches.refresh() : await this.#deps.switches.current();
    if (actionForObject(switches, key.tenantId, key.resource) !== undefined) return undefined;
    const events = assignSeq([at.inline], at.seq).map(toDelivered);
    await this.#publish(key, events, new TurnLookups(this.#lookups, key.tenantId, now), sink);
    const state = await queues.commitQuiet(key, at.cursor, at.seq + 1, now());
    this.#deps.metrics.count('QuietTurns', 1, { read: at.inline === fromSnapshot ? 'none' : 'meta' });
    return this.#ended(key, `q${at.cursor + 1}`, state, 1, lane);
  }

  /** Whether an event expires within EXPIRY_MARGIN_MS of `at`: it must be committed before it is published. */
  #nearExpiry(item: Pick<PendingItem, 'reservedAt' | 'expiresAt'>, at: number): boolean {
    // By the expiry the item was written with (its TTL), when it has one: an event accepted
    // before retentionDays was raised still expires at the old period's end.
    const expiresAt = item.expiresAt ?? item.reservedAt + this.#deps.config.retentionDays * 86_400_000;
    return expiresAt - at <= EXPIRY_MARGIN_MS;
  }

  /** After the turn's last write: idle, or ring again for the events that came meanwhile. */
  async #ended(key: ObjectKey, token: string, state: 'idle' | 'pending', distributed: number, lane: Lane): Promise<TurnOutcome> {
    if (state === 'idle') return { outcome: 'idle', distributed };
    await this.#deps.doorbell.ring(key, token, { lane });
    this.#deps.metrics.count('DoorbellsRung', 1, { by: 'distributor' });
    return { outcome: 'rerung', distributed };
  }

  /**
   * Of a dropped chunk's parents, those with a subscriber (a webhook, or an active
   * stream) not kept yet, added to `kept` while the object keeps fewer than
   * MAX_DROPPED_PARENTS, for the gap marker at the lift: those that had none when their
   * events were dropped would not have received them. All of them, for a hot object whose
   * events each name other parents, would grow the meta item (which every ingest writes,
   * at a write unit per KB) to DynamoDB's 400 KB, where its drop commits fail.
   *
   * Looked up DROP_LOOKUP_SLICE at a time, in the order the events name them, and no more
   * once the object keeps its most: a flood dropped by on-call, its events each naming
   * new parents, then costs each chunk no lookups, where it cost a read or two per
   * parent (2,000 for a chunk naming 20 each) for names it could not keep. The parents
   * not kept get no gap marker: logged.
   */
  async #keepForMarker(key: ObjectKey, kept: Set<string>, parents: readonly string[], lookups: TurnLookups): Promise<string[]> {
    const candidates = [...new Set(parents)].filter((parent) => parent !== key.resource && !kept.has(parent));
    const added: string[] = [];
    let looked = 0;
    let left = 0;
    while (looked < candidates.length && kept.size < MAX_DROPPED_PARENTS) {
      const slice = candidates.slice(looked, looked + DROP_LOOKUP_SLICE);
      looked += slice.length;
      const subscribed = await Promise.all(
        slice.map(
          async (parent) =>
            (await lookups.webhooksOn(parent)).length > 0 || (this.#deps.streams !== undefined && (await lookups.streamActive(parent))),
        ),
      );
      slice.forEach((parent, i) => {
        if (!subscribed[i]) return;
        if (kept.size < MAX_DROPPED_PARENTS) {
          kept.add(parent);
          added.push(parent);
        } else left++;
      });
    }
    const unlooked = candidates.length - looked;
    if (left > 0 || unlooked > 0) {
      this.#deps.logger.warn("Parents of dropped events left out of the drop's gap marker: the object keeps no more", {
        tenant: key.tenantId,
        resource: key.resource,
        // With a subscriber, and parents not looked up (some may have none).
        left,
        unlooked,
        kept: MAX_DROPPED_PARENTS,
      });
    }
    return added;
  }

  /** Counts what a chunk consumed without delivering: expired, skipped, dropped by a switch (expired ones too, then). */
  #countConsumed(key: ObjectKey, plan: { take: readonly unknown[]; expired: number; skipped: number }, dropping: boolean): void {
    const { metrics, logger } = this.#deps;
    if (plan.expired > 0) {
      if (!dropping) metrics.count('EventsDropped', plan.expired, { reason: 'retention' });
      logger.warn('Dropped events past the retention period', { tenant: key.tenantId, resource: key.resource, expired: plan.expired });
    }
    if (plan.skipped > 0) {
      metrics.count('SlotsSkipped', plan.skipped);
      logger.warn('Skipped reserved slots with no event', { tenant: key.tenantId, resource: key.resource, skipped: plan.skipped });
    }
    if (dropping) metrics.count('EventsDropped', plan.take.length + plan.expired, { reason: 'switch_drop' });
  }

  /**
   * Publishes one `sluice.gap` marker for events that will never be delivered (a
   * drop switch discarded them, or they outlived the retention period) to every
   * webhook and active stream on the resource or the events' parents, whatever
   * their type filters: a consumer must learn it missed something.
   *
   * The marker is sent before the write that stands for it (the commit, or taking back
   * the drop count), so a holder that dies in between leaves the next one to send it
   * again. Its ids derive from the object, where it was sent (the cursor, or the chunk
   * published again) and what it says (as a released gap marker's do), so that copy has
   * the same `evt_` and `msg_` ids, and a subscriber counts the events it stands for once.
   */
  async #publishGapMarker(
    key: ObjectKey,
    data: GapMarker['data'],
    at: number | string,
    parents: readonly string[],
    lookups: TurnLookups,
    sink: DeliverySink,
  ): Promise<void> {
    const now = this.#deps.now();
    const parts = [key.tenantId, key.resource, at, data.reason, data.dropped];
    const marker: GapMarker = {
      id: derivedId('evt', ...parts),
      resource: key.resource,
      type: 'sluice.gap',
      data,
      created_at: new Date(now).toISOString(),
    };
    const webhooks = new Map<string, Subscriber>();
    for (const resource of [key.resource, ...parents]) {
      // A disabled webhook's marker is held with its deliveries, for when it is enabled again.
      for (const webhook of await lookups.webhooksOn(resource)) webhooks.set(webhook.id, webhook);
    }
    await this.#appendToStreams(key, [marker], [key.resource, ...parents], lookups);
    await sink.send(
      [...webhooks.values()].map((webhook) => ({
        deliveryId: derivedId('msg', webhook.id, ...parts),
        tenantId: key.tenantId,
        webhookId: webhook.id,
        events: [marker],
        attempt: 1,
      })),
    );
    this.#deps.metrics.count('GapMarkers', 1, { reason: data.reason });
  }

  /**
   * The stream sinks: every active stream on the event's resource or a parent gets
   * the same event objects, with the same seq, as the webhooks.
   *
   * An entry's position is the time it was stamped, and a reader serves positions up
   * to STREAM_SETTLE_MS before its own clock, which may be up to STREAM_CLOCKS_APART_MS
   * ahead of this one: an entry that lands later than the rest of that window
   * (throttled batches retried, a stalled container) may be behind a token already,
   * and would never be read. So an append that took STREAM_LATE_MS or more is written
   * again at a fresh position (readers that saw the first copy see the same seq twice,
   * which streams allow), and one that keeps landing late fails the turn, which is
   * then published again, rather than let a stream miss events. An append goes in
   * pieces of at most STREAM_PIECE_BYTES, one after the other, each stamped as it is
   * written and written again before the next if it landed late: a piece's time is
   * that of its own bytes, and the stream's order holds.
   */
  async #appendToStreams(
    key: ObjectKey,
    events: readonly (DeliveredEvent | GapMarker)[],
    resources: readonly string[],
    lookups: TurnLookups,
  ): Promise<void> {
    const streams = this.#deps.streams;
    if (!streams || events.length === 0) return;
    await Promise.all(
      resources.map(async (resource) => {
        if (!(await lookups.streamActive(resource))) return;
        const onStream = events.filter(
          // A gap marker names no parents: it goes to every stream it was sent for.
          (e) => e.resource === resource || !('parents' in e) || e.parents.includes(resource),
        );
        for (const piece of chunkByBytes(onStream, { maxBytes: STREAM_PIECE_BYTES })) {
          for (let attempt = 1; ; attempt++) {
            const stampedAt = this.#stamp();
            const entries = piece.map((event) => ({
              position:
                'seq' in event
                  ? streamPosition(stampedAt, event.resource, event.seq)
                  : streamPosition(stampedAt, event.resource, 0, event.id),
              event,
            }));
            await streams.append(key.tenantId, resource, entries, stampedAt);
            const tookMs = this.#deps.now() - stampedAt;
            if (tookMs < STREAM_LATE_MS) break;
            this.#deps.metrics.count('StreamAppendsLate');
            this.#deps.logger.warn('Stream append landed late; appending again', { tenant: key.tenantId, resource, tookMs, attempt });
            if (attempt === STREAM_APPEND_TRIES) throw new Error(`Stream append for ${resource} landed late ${attempt} times`);
          }
        }
      }),
    );
  }

  /**
   * The time to stamp a stream append with: the clock, but never the same millisecond
   * twice. Gap markers have seq 0 and are told apart by their ids, not by the order they
   * were sent: two markers of one object appended in one millisecond (a turn's
   * switch_drop marker, then its first chunk's retention marker) would be read in the
   * order of their ids. One object's appends come from one turn at a time: within its
   * container, later ones get later stamps, in the order they were sent.
   */
  #stamp(): number {
    this.#lastStamp = Math.max(this.#deps.now(), this.#lastStamp + 1);
    return this.#lastStamp;
  }

  /** Publishes again a chunk a previous holder committed and may not have published. */
  async #republish(key: ObjectKey, turn: TurnRecord, lookups: TurnLookups, sink: DeliverySink): Promise<number> {
    // Each event with the seq its plan gave it. One whose item is gone expired after the
    // plan and was deleted by DynamoDB's TTL: its seq is a hole, announced by a gap marker
    // (every copy of it, from each republish, has one id). Its place names the chunk, not
    // a cursor: the next chunk's marker of events expired when it is planned is sent at
    // the cursor this chunk ends at, and may count as many; with one id, a subscriber
    // would take the second for a copy of the first, and never learn of its events.
    const { events, gone } = chunkAgain(await this.#deps.queues.readTurn(key, turn), turn);
    await this.#publish(key, events.map(toDelivered), lookups, sink);
    if (gone > 0) {
      this.#deps.metrics.count('EventsDropped', gone, { reason: 'retention' });
      this.#deps.logger.warn('Events of a chunk published again were gone (past the retention period)', {
        tenant: key.tenantId,
        resource: key.resource,
        events: gone,
      });
      await this.#publishGapMarker(key, { dropped: gone, reason: 'retention' }, `chunk ${turn.fromSlot}-${turn.toSlot}`, [], lookups, sink);
    }
    this.#deps.metrics.count('ChunksRepublished');
    return events.length;
  }

  async #publish(key: ObjectKey, events: readonly DeliveredEvent[], lookups: TurnLookups, sink: DeliverySink): Promise<void> {
    const resources = new Set(events.flatMap(subscribedResources));
    const lists = new Map<string, readonly Subscriber[]>();
    await Promise.all(
      [...resources].map(async (resource) => {
        lists.set(resource, await lookups.webhooksOn(resource));
      }),
    );
    await this.#appendToStreams(key, events, [...resources], lookups);
    const planned = planDeliveries(events, (resource) => lists.get(resource) ?? []);
    const messages: DeliveryMessage<DeliveredEvent>[] = planned.map((delivery) => ({
      deliveryId: deliveryId(delivery.webhook.id, delivery.events),
      tenantId: key.tenantId,
      webhookId: delivery.webhook.id,
      events: delivery.events,
      attempt: 1,
    }));
    await sink.send(messages);
    this.#deps.metrics.count('EventsDistributed', events.length);
    this.#deps.metrics.count('DeliveriesQueued', messages.length);
  }
}
