/** The canary's own tenant and webhook, created on its first run and kept in the control table. */
import { type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, names } from './dynamo.ts';

/** The canary's tenant, saved as soon as it exists, so that a run that fails after it resumes from it. */
export interface CanaryTenant {
  readonly tenantId: string;
  /** The internal tenant's API key: the canary publishes through the public API, like any app. */
  readonly apiKey: string;
}

export interface CanaryState extends CanaryTenant {
  readonly webhookId: string;
  readonly secret: string;
}

/** Whether the canary's setup is complete: its webhook exists too. */
export function hasWebhook(state: CanaryTenant | CanaryState): state is CanaryState {
  return 'webhookId' in state && typeof state.webhookId === 'string';
}

const KEY = { pk: CONTROL_PK.canary, sk: 'state' };

export class CanaryStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  async get(): Promise<CanaryTenant | CanaryState | undefined> {
    const result = await this.#client.send(new GetCommand({ TableName: this.#table, Key: KEY, ConsistentRead: true }));
    return result.Item ? (result.Item.state as CanaryTenant | CanaryState) : undefined;
  }

  /**
   * Saves the canary's tenant, or its completed state over the tenant it was built
   * on, unless another run saved first; answers the state in force.
   */
  async save<S extends CanaryTenant | CanaryState>(state: S): Promise<CanaryTenant | CanaryState> {
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
