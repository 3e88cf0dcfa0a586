/**
 * Each endpoint's pace: when its time is next free (the per-endpoint rate), kept in the
 * control table under its webhook. The pace itself is core/endpoint-pace.ts.
 */

import { DeleteCommand, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { paceSendAt } from '../core/endpoint-pace.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { applied, isConditionFailure, names } from './dynamo.ts';
import { gathered, type Waiter, WebhookItems } from './webhook-items.ts';

// A partition the delivery function's role may reach (TABLE_ACCESS.delivery).
const pacePk = (webhookId: string) => `${CONTROL_PK.pace}${webhookId}`;

/** How long a container answers `freeAt` and `givenBack` from the endpoint's tat it last read. */
const PACE_SEEN_MS = 1_000;

export class PaceStore extends WebhookItems {
  readonly #paces = new Map<string, Array<Waiter<number>>>();
  /** Endpoints whose time was last seen reserved beyond now, and until when: their next reservation tries the busy write first. */
  readonly #busyUntil = new Map<string, number>();
  /** Each endpoint's tat as this container last read it (`freeAt`), and when (epoch ms). */
  readonly #paceSeen = new Map<string, { readonly at: number; readonly tat: Promise<number | undefined> }>();

  /**
   * Reserves one POST's share (`intervalMs`) of the endpoint's time and answers when
   * it may go (epoch ms; at most `now` means at once): see core/endpoint-pace.ts.
   * Reservations for one endpoint in this container (the records of one invocation)
   * share one write, and take consecutive shares.
   */
  reserve(webhookId: string, intervalMs: number, now: number): Promise<number> {
    return gathered(this.#paces, `${webhookId}|${intervalMs}`, async (count) => {
      const freeFrom = await this.#reservePace(webhookId, count * intervalMs, now);
      return Array.from({ length: count }, (_, i) => paceSendAt(freeFrom + i * intervalMs, now, intervalMs));
    });
  }

  /**
   * Moves the endpoint's tat on by `span` and answers where the span starts. Two
   * conditional writes, each atomic, so no read and no lost update between senders:
   * an endpoint whose time is free starts again from now; a busy one continues from
   * its tat. Whichever answered last for this endpoint is tried first. Neither write
   * is idempotent: if the SDK retries one that applied but whose answer was lost, the
   * span is taken twice, which leaves the endpoint idle for it (a lower rate, never a
   * higher one).
   */
  async #reservePace(webhookId: string, span: number, now: number): Promise<number> {
    const key = { pk: pacePk(webhookId), sk: 'pace' };
    const expiry = this.expiry(now);
    const free = () =>
      applied(
        this.client.send(
          new UpdateCommand({
            TableName: this.table,
            Key: key,
            UpdateExpression: 'SET #tat = :end, #expires_at = :exp',
            ConditionExpression: 'attribute_not_exists(#tat) OR #tat <= :now',
            ExpressionAttributeNames: names('tat', 'expires_at'),
            ExpressionAttributeValues: { ':end': now + span, ':now': now, ':exp': expiry.expires_at },
          }),
        ),
      );
    const busy = async () => {
      try {
        const result = await this.client.send(
          new UpdateCommand({
            TableName: this.table,
            Key: key,
            UpdateExpression: 'SET #tat = #tat + :span, #expires_at = :exp',
            ConditionExpression: '#tat > :now',
            ExpressionAttributeNames: names('tat', 'expires_at'),
            ExpressionAttributeValues: { ':span': span, ':now': now, ':exp': expiry.expires_at },
            ReturnValues: 'UPDATED_NEW',
          }),
        );
        return Number(result.Attributes?.tat) - span;
      } catch (error) {
        if (isConditionFailure(error)) return undefined;
        throw error;
      }
    };
    // tat only grows, so once `free` is refused `busy` holds; the loop covers the item
    // expiring in between.
    for (let tries = 0; tries < 3; tries++) {
      if ((this.#busyUntil.get(webhookId) ?? 0) <= now && (await free())) {
        this.#busyUntil.delete(webhookId);
        return now;
      }
      const from = await busy();
      if (from !== undefined) {
        this.#busyUntil.set(webhookId, from + span);
        if (this.#busyUntil.size > 10_000) this.#busyUntil.clear();
        return from;
      }
      this.#busyUntil.delete(webhookId);
    }
    throw new Error(`Could not reserve a send for webhook ${webhookId}`);
  }

  /**
   * Gives the endpoint's time back: it is free from now. For an endpoint whose pace got
   * quicker (a new URL, or one that answers quickly again after slow answers): its tat
   * was moved on at the slow pace, by every share of its backlog, and would hold each
   * new delivery behind them at that pace (see `givenBack`).
   */
  async giveBack(webhookId: string): Promise<void> {
    await this.client.send(new DeleteCommand({ TableName: this.table, Key: { pk: pacePk(webhookId), sk: 'pace' } }));
    this.#busyUntil.delete(webhookId);
    this.#paceSeen.delete(webhookId);
  }

  /**
   * Whether the endpoint's time was given back (`giveBack`) since a share that lets
   * a delivery go at `sendAt` was reserved. The tat only grows past every share it has
   * given, so one before `sendAt` was reset since: a share taken now comes sooner.
   *
   * Answered from the tat this container read within PACE_SEEN_MS, if it did: every
   * look of a slow endpoint's backlog read the one item otherwise, hundreds of times a
   * second for a backlog of hours, up to the 3,000 reads a second of a partition that
   * other tenants' items share. Safe because a delivery first looks a minute at least
   * after its share was taken (core/endpoint-pace.ts `paceLookSeconds`), so a tat read
   * in the last second was read after it; a time given back within that second is seen
   * at the delivery's next look instead.
   */
  async givenBack(webhookId: string, sendAt: number, now: number): Promise<boolean> {
    const tat = await this.freeAt(webhookId, now);
    return tat === undefined || tat < sendAt;
  }

  /**
   * When the endpoint's time is next free (epoch ms; at most `now`, or undefined: free now),
   * as this container read it within PACE_SEEN_MS, without taking any of it: whether a
   * slow endpoint's delivery would get a share far ahead, and is held instead (see
   * core/endpoint-pace.ts `holdsBehindPace`). Up to a second old: a share given meanwhile
   * moves it on by one POST's share, a time given back in that second is seen a second on.
   */
  async freeAt(webhookId: string, now: number): Promise<number | undefined> {
    let seen = this.#paceSeen.get(webhookId);
    if (seen === undefined || now < seen.at || now - seen.at >= PACE_SEEN_MS) {
      const read = this.client
        .send(new GetCommand({ TableName: this.table, Key: { pk: pacePk(webhookId), sk: 'pace' }, ConsistentRead: true }))
        .then((result) => (result.Item?.tat === undefined ? undefined : Number(result.Item.tat)));
      const fresh = { at: now, tat: read };
      seen = fresh;
      if (this.#paceSeen.size >= 10_000) this.#paceSeen.clear();
      this.#paceSeen.set(webhookId, fresh);
      // A read that failed is not kept: the next look reads again.
      read.catch(() => {
        if (this.#paceSeen.get(webhookId) === fresh) this.#paceSeen.delete(webhookId);
      });
    }
    return seen.tat;
  }
}
