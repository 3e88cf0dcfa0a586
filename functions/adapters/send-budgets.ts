/**
 * Per-window send counters, kept in the control table: for the attempts a failing
 * endpoint may have, and the other budgets counted by window (a tenant's failing
 * endpoints together, a webhook's replays, a tenant's URL verifications, what is done
 * once a window).
 */

import { randomUUID } from 'node:crypto';
import { type DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { CONTROL_PK } from '../definitions/tables.ts';
import { appliedOwn, isConditionFailure, names } from './dynamo.ts';
import { gathered, type Waiter } from './webhook-items.ts';

// A partition the delivery function's role may reach (TABLE_ACCESS.delivery).
const ratePk = (webhookId: string, windowMs: number, window: number) => `${CONTROL_PK.rate}${webhookId}#${windowMs}#${window}`;

export class SendBudgets {
  readonly #takes = new Map<string, Array<Waiter<boolean>>>();
  /** Per key, the last window this container saw taken by `takeOnce` (by itself or another). */
  readonly #takenWindows = new Map<string, number>();
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  /**
   * Takes one send from a budget of `limit` per `windowMs` for the current window
   * (a failing endpoint's attempts, or a tenant's failing endpoints' together); false
   * when the budget is spent (the caller delays the delivery, never fails it).
   * Concurrent takes of one budget in this container (the records of one invocation)
   * share one write when the budget has room for all.
   */
  takeSlot(webhookId: string, limit: number, windowMs: number, now: number): Promise<boolean> {
    const window = Math.floor(now / windowMs);
    return gathered(this.#takes, `${webhookId}|${limit}|${windowMs}|${window}`, async (count) => {
      if (count > 1 && count <= limit && (await this.#take(webhookId, limit, windowMs, window, count))) return Array(count).fill(true);
      // Alone, or the budget has no room for all of them: one by one, as far as it goes.
      const granted: boolean[] = [];
      for (let i = 0; i < count; i++) granted.push(await this.#take(webhookId, limit, windowMs, window, 1));
      return granted;
    });
  }

  /**
   * Takes up to `want` units of a budget of `limit` per `windowMs` for `key` (a webhook's
   * replays), as many as the current window has left: answers how many it got (0 when
   * the window's are spent) and the window, for `adjust`. Each take is one
   * conditional write, so callers at once never take more than the window holds between
   * them.
   */
  async takeUpTo(key: string, want: number, limit: number, windowMs: number, now: number): Promise<{ taken: number; window: number }> {
    const window = Math.floor(now / windowMs);
    for (let tries = 0; tries < 5; tries++) {
      const counted = await this.#client.send(
        new GetCommand({
          TableName: this.#table,
          Key: { pk: ratePk(key, windowMs, window), sk: 'rate' },
          ConsistentRead: true,
          ProjectionExpression: '#sent',
          ExpressionAttributeNames: names('sent'),
        }),
      );
      const room = limit - Number(counted.Item?.sent ?? 0);
      if (room <= 0) return { taken: 0, window };
      const taken = Math.min(want, room);
      if (await this.#take(key, limit, windowMs, window, taken)) return { taken, window };
      // Another caller took some of the room meanwhile: read what is left again.
    }
    return { taken: 0, window };
  }

  /**
   * Adds `count` (less than 0 gives units back) to what `takeUpTo` counted for `key`
   * in `window`: what a caller used, once it knows, against what it took.
   */
  async adjust(key: string, windowMs: number, window: number, count: number): Promise<void> {
    if (count === 0) return;
    await this.#client
      .send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: ratePk(key, windowMs, window), sk: 'rate' },
          UpdateExpression: 'ADD #sent :count',
          // Only a window's item still kept: one whose expiry has removed it needs no correction.
          ConditionExpression: 'attribute_exists(#sent)',
          ExpressionAttributeNames: names('sent'),
          ExpressionAttributeValues: { ':count': count },
        }),
      )
      .catch((error: unknown) => {
        if (!isConditionFailure(error)) throw error;
      });
  }

  /**
   * True for one caller per window of `windowMs` for `key`, across containers (a
   * budget of one send, see takeSlot). A container that saw the window taken
   * answers false without writing again, so that asking once per record costs one
   * write per container and window.
   */
  async takeOnce(key: string, windowMs: number, now: number): Promise<boolean> {
    const window = Math.floor(now / windowMs);
    if (this.#takenWindows.get(key) === window) return false;
    const taken = await this.takeSlot(key, 1, windowMs, now);
    this.#takenWindows.set(key, window);
    if (this.#takenWindows.size > 10_000) this.#takenWindows.clear();
    return taken;
  }

  /**
   * Takes `count` sends of a window's budget. With a token of its own, which the condition
   * refuses where it already is: a take whose answer was lost, refused on the SDK's second
   * try (by its own token, or by the budget it used up), finds its token and is still
   * its caller's. Taken for another's, a recheck's window (`takeOnce`) would have been
   * taken by no one that sends it, and the delivery held under a switch lifted meanwhile
   * would wait for a later delivery's hold, if one ever came.
   */
  async #take(webhookId: string, limit: number, windowMs: number, window: number, count: number): Promise<boolean> {
    const key = { pk: ratePk(webhookId, windowMs, window), sk: 'rate' };
    const token = randomUUID();
    return appliedOwn(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: key,
          UpdateExpression: 'ADD #sent :count SET #expires_at = :exp, #take_token = :token',
          ConditionExpression:
            '(attribute_not_exists(#sent) OR #sent <= :room) AND (attribute_not_exists(#take_token) OR #take_token <> :token)',
          ExpressionAttributeNames: names('sent', 'expires_at', 'take_token'),
          ExpressionAttributeValues: {
            ':count': count,
            ':room': limit - count,
            ':token': token,
            ':exp': Math.floor((window * windowMs) / 1000) + Math.ceil(windowMs / 1000) + 120,
          },
        }),
      ),
      { client: this.#client, table: this.#table, key, attribute: 'take_token', token },
    );
  }
}
