/** The canary's own tenant and webhook, created on its first run and kept in the control table. */
import { type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, names } from './dynamo.ts';

export interface CanaryState {
  readonly tenantId: string;
  /** The internal tenant's API key: the canary publishes through the public API, like any app. */
  readonly apiKey: string;
  readonly webhookId: string;
  readonly secret: string;
}

const KEY = { pk: CONTROL_PK.canary, sk: 'state' };

export class CanaryStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  async get(): Promise<CanaryState | undefined> {
    const result = await this.#client.send(new GetCommand({ TableName: this.#table, Key: KEY, ConsistentRead: true }));
    return result.Item ? (result.Item.state as CanaryState) : undefined;
  }

  /** Saves the state unless another run saved one first; returns the state in force. */
  async create(state: CanaryState): Promise<CanaryState> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: { ...KEY, state },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
      return state;
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return (await this.get()) ?? state;
    }
  }
}
