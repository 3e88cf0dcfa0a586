/** Telling a webhook's owner it was disabled: an SNS message in AWS, a list in the sandbox. */
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import type { Notifier, WebhookDisabledNotice } from '../app/delivery/deps.ts';
import { AWS_CALL_TIMEOUTS, withoutSdkLogging } from './aws.ts';

/** SNS's client for the delivery function in AWS, with the same timeouts as the other clients. */
export function snsClient(): SNSClient {
  return withoutSdkLogging(new SNSClient({ requestHandler: { ...AWS_CALL_TIMEOUTS } }));
}

export class SnsNotifier implements Notifier {
  readonly #client: SNSClient;
  readonly #topicArn: string;

  constructor(options: { client: SNSClient; topicArn: string }) {
    this.#client = options.client;
    this.#topicArn = options.topicArn;
  }

  async webhookDisabled(notice: WebhookDisabledNotice): Promise<void> {
    await this.#client.send(
      new PublishCommand({
        TopicArn: this.#topicArn,
        Subject: 'sluice: webhook disabled',
        Message: JSON.stringify(notice),
        MessageAttributes: { tenant: { DataType: 'String', StringValue: notice.tenant } },
      }),
    );
  }
}

/** Keeps notices in memory, for the sandbox and its tests. */
export class RecordingNotifier implements Notifier {
  readonly notices: WebhookDisabledNotice[] = [];

  async webhookDisabled(notice: WebhookDisabledNotice): Promise<void> {
    this.notices.push(notice);
  }
}
