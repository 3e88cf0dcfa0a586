/** Records as Lambda's SQS event source mapping hands them to a function. */
import { randomUUID } from 'node:crypto';
import type { SQSRecord, SQSRecordAttributes } from 'aws-lambda';

/**
 * One record carrying `body` (text, as SQS keeps it), received once and sent at time 0
 * unless `attributes` say otherwise (`SentTimestamp`, `ApproximateReceiveCount`,
 * `MessageGroupId` of a FIFO queue's message).
 */
export function sqsRecord(body: string, attributes: Partial<SQSRecordAttributes> = {}, messageId: string = randomUUID()): SQSRecord {
  return {
    messageId,
    receiptHandle: messageId,
    body,
    attributes: {
      ApproximateReceiveCount: '1',
      SentTimestamp: '0',
      SenderId: 's',
      ApproximateFirstReceiveTimestamp: '0',
      ...attributes,
    },
    messageAttributes: {},
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:q',
    awsRegion: 'us-east-1',
  };
}
