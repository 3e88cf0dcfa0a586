/**
 * The canary's own tenant and webhook, created on its first run and kept in the
 * control table. Its tenant's API key is kept apart (adapters/canary-key.ts): the
 * public canary receiver reads this item, to verify the webhook's signatures. The
 * receiver notes the ticks that arrived in an item of their own, which is all it may
 * write.
 */
import { type DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, names } from './dynamo.ts';

/** The canary's tenant, saved as soon as it exists, so that a run that fails after it resumes from it. */
export interface CanaryTenant {
  readonly tenantId: string;
}

export interface CanaryState extends CanaryTenant {
  readonly webhookId: string;
  readonly secret: string;
}

/** Whether the canary's setup is complete: its webhook exists too. */
export function hasWebhook(state: CanaryTenant | CanaryState): state is CanaryState {
  return 'webhookId' in state && typeof state.webhookId === 'string';
}

/** What is saved. An item saved before the key moved to a store of its own still holds it, until the canary moves it. */
export type SavedCanary = (CanaryTenant | CanaryState) & { readonly apiKey?: string };

const KEY = { pk: CONTROL_PK.canary, sk: 'state' };
const ARRIVALS_KEY = { pk: CONTROL_PK.canaryArrivals, sk: 'latest' };

/**
 * The two ways an event goes through the pipeline, and the canary's tick for each:
 * `quiet`, kept on its object's meta item and published without a lease; `leased`,
 * written to a slot and published by a turn that holds the object's lease.
 */
export type CanaryPath = 'quiet' | 'leased';

export class CanaryStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  async get(): Promise<SavedCanary | undefined> {
    const result = await this.#client.send(new GetCommand({ TableName: this.#table, Key: KEY, ConsistentRead: true }));
    return result.Item ? (result.Item.state as SavedCanary) : undefined;
  }

  /**
   * Notes that the tick of `path` sent at `sentAt` arrived, and answers whether it
   * completes a run: the other path has brought a tick sent at `sentAt` or later. Its
   * attribute keeps the latest such time, so a tick that comes again (a retried delivery)
   * or after a later one of its path notes nothing and answers false: each run counts
   * once, whichever of its ticks comes last, and a path that lags the other by more than
   * a run still completes each run it brings. (An answer lost after the write applied
   * leaves that run uncounted: the alarm wants one run in five.)
   */
  async noteArrival(path: CanaryPath, sentAt: number): Promise<boolean> {
    const other: CanaryPath = path === 'quiet' ? 'leased' : 'quiet';
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: ARRIVALS_KEY,
          UpdateExpression: 'SET #path = :sentAt',
          ConditionExpression: 'attribute_not_exists(#path) OR #path < :sentAt',
          ExpressionAttributeNames: { '#path': path },
          ExpressionAttributeValues: { ':sentAt': sentAt },
          ReturnValues: 'ALL_NEW',
        }),
      );
      const brought = result.Attributes?.[other];
      return typeof brought === 'number' && brought >= sentAt;
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return false;
    }
  }

  /** Removes the API key from an item saved with it, once the key is kept elsewhere. */
  async forgetKey(tenantId: string): Promise<void> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: KEY,
          UpdateExpression: 'REMOVE #state.#apiKey',
          ConditionExpression: '#state.#tenantId = :tenantId',
          ExpressionAttributeNames: names('state', 'apiKey', 'tenantId'),
          ExpressionAttributeValues: { ':tenantId': tenantId },
        }),
      );
    } catch (error) {
      // Another tenant's item now: it was saved without a key.
      if (!isConditionFailure(error)) throw error;
    }
  }

  /** Forgets the canary's webhook (deleted by hand), if it is still the one saved: the next setup makes another. */
  async forgetWebhook(webhookId: string): Promise<void> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: KEY,
          UpdateExpression: 'REMOVE #state.#webhookId, #state.#secret',
          ConditionExpression: '#state.#webhookId = :webhookId',
          ExpressionAttributeNames: names('state', 'webhookId', 'secret'),
          ExpressionAttributeValues: { ':webhookId': webhookId },
        }),
      );
    } catch (error) {
      // Another webhook is saved now: nothing to forget.
      if (!isConditionFailure(error)) throw error;
    }
  }

  /**
   * Saves the canary's tenant, or its completed state over the tenant it was built
   * on, unless another run saved first; answers the state in force.
   */
  async save<S extends CanaryTenant | CanaryState>(state: S): Promise<SavedCanary> {
    const completing = hasWebhook(state);
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: { ...KEY, state },
          // A tenant only where there is nothing yet; a webhook only on its own tenant, once.
          ConditionExpression: completing
            ? '#state.#tenantId = :tenantId AND attribute_not_exists(#state.#webhookId)'
            : 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: completing ? names('state', 'tenantId', 'webhookId') : names('pk'),
          ...(completing && { ExpressionAttributeValues: { ':tenantId': state.tenantId } }),
        }),
      );
      return state;
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return (await this.get()) ?? state;
    }
  }
}
