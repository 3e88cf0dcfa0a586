import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { keepDynaliteParses } from '../../sandbox/dynalite-parses.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

describe("the sandbox's kept dynalite parses", () => {
  let emulators: Emulators;
  let client: ReturnType<typeof documentClient>;
  let table: string;
  const parses = keepDynaliteParses();

  beforeAll(async () => {
    emulators = await startEmulators();
    const tables = await createTables(new DynamoDBClient(emulators.dynamo));
    table = tables.Control as string;
    client = documentClient(emulators.dynamo);
  });

  afterAll(async () => {
    client.destroy();
    await emulators.stop();
  });

  const capped = (pk: string, max: number) =>
    client
      .send(
        new UpdateCommand({
          TableName: table,
          Key: { pk, sk: 'x' },
          UpdateExpression: 'SET #last = :max ADD #n :one',
          ConditionExpression: '(attribute_not_exists(#n) OR #n < :max) AND (attribute_not_exists(#last) OR #last <> :never)',
          ExpressionAttributeNames: { '#n': 'n', '#last': 'last' },
          ExpressionAttributeValues: { ':max': max, ':one': 1, ':never': -1 },
        }),
      )
      .then(
        () => 'applied',
        (error: Error) => error.name,
      );

  it("judges each request's condition by its own values, not the first request's", async () => {
    const spared = parses.spared();
    // n goes 0 → 1 → 2; then a cap of 2 refuses, and a cap of 5 lets it go on.
    const answers = [await capped('cap', 5), await capped('cap', 5), await capped('cap', 2), await capped('cap', 5)];
    const item = await client.send(new GetCommand({ TableName: table, Key: { pk: 'cap', sk: 'x' } }));
    expect(answers).toEqual(['applied', 'applied', 'ConditionalCheckFailedException', 'applied']);
    expect(item.Item).toMatchObject({ n: 3, last: 5 });
    // The same condition and update were parsed once: the later requests were spared both parses.
    expect(parses.spared() - spared).toBeGreaterThanOrEqual(6);
  });

  it('gives each request a tree of its own (dynalite resolves an update in place)', async () => {
    const add = (pk: string, step: number) =>
      client.send(
        new UpdateCommand({
          TableName: table,
          Key: { pk, sk: 'x' },
          UpdateExpression: 'SET #total = if_not_exists(#total, :zero) + :step',
          ExpressionAttributeNames: { '#total': 'total' },
          ExpressionAttributeValues: { ':zero': 0, ':step': step },
        }),
      );
    for (const step of [1, 2, 3]) await add('sum', step);
    const item = await client.send(new GetCommand({ TableName: table, Key: { pk: 'sum', sk: 'x' } }));
    expect(item.Item?.total).toBe(6);
  });

  it('still refuses what the parser refuses, after a kept parse of the same text', async () => {
    await capped('refused', 5);
    const refusal = (input: Partial<ConstructorParameters<typeof UpdateCommand>[0]>) =>
      client
        .send(
          new UpdateCommand({
            TableName: table,
            Key: { pk: 'refused', sk: 'x' },
            UpdateExpression: 'SET #last = :max ADD #n :one',
            ConditionExpression: '(attribute_not_exists(#n) OR #n < :max) AND (attribute_not_exists(#last) OR #last <> :never)',
            ExpressionAttributeNames: { '#n': 'n', '#last': 'last' },
            ExpressionAttributeValues: { ':max': 5, ':one': 1, ':never': -1 },
            ...input,
          }),
        )
        .then(
          () => 'applied',
          (error: Error) => `${error.name}: ${error.message}`,
        );
    // A value the expressions name but the request does not define.
    expect(await refusal({ ExpressionAttributeValues: { ':max': 5, ':one': 1 } })).toMatch(/ValidationException.*:never/);
    // A name the request defines and no expression uses.
    expect(await refusal({ ExpressionAttributeNames: { '#n': 'n', '#last': 'last', '#spare': 'spare' } })).toMatch(
      /ValidationException.*unused/,
    );
    // ADD of a string: a value of another type is parsed again, and refused.
    expect(await refusal({ ExpressionAttributeValues: { ':max': 5, ':one': 'one', ':never': -1 } })).toMatch(/ValidationException/);
    // A BETWEEN's bounds are compared by value: always parsed, so reversed bounds are refused.
    const between = (from: string, to: string) =>
      client
        .send(
          new QueryCommand({
            TableName: table,
            KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
            ExpressionAttributeNames: { '#pk': 'pk', '#sk': 'sk' },
            ExpressionAttributeValues: { ':pk': 'refused', ':from': from, ':to': to },
          }),
        )
        .then(
          (result) => result.Count,
          (error: Error) => error.name,
        );
    expect([await between('a', 'z'), await between('z', 'a')]).toEqual([1, 'ValidationException']);
  });

  it('keeps attribute names apart: the same text with other names is another parse', async () => {
    await client.send(new PutCommand({ TableName: table, Item: { pk: 'names', sk: 'x', a: 1, b: 9 } }));
    const below = (name: string) =>
      client
        .send(
          new UpdateCommand({
            TableName: table,
            Key: { pk: 'names', sk: 'x' },
            UpdateExpression: 'SET #seen = :yes',
            ConditionExpression: '(attribute_not_exists(#f) OR #f < :limit)',
            ExpressionAttributeNames: { '#f': name, '#seen': 'seen' },
            ExpressionAttributeValues: { ':limit': 5, ':yes': true },
          }),
        )
        .then(
          () => 'applied',
          (error: Error) => error.name,
        );
    expect([await below('a'), await below('b')]).toEqual(['applied', 'ConditionalCheckFailedException']);
  });
});
