import type { Logger } from '../log.js';
import type { MembershipRegistry } from './registry.js';

/** A worker's presence in the ring: heartbeat every ttl/3 from start() until close(). */
export class NodeHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly registry: MembershipRegistry,
    private readonly nodeId: string,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const joined = await this.registry.heartbeat(this.nodeId, this.ttlMs);
    this.logger.info({ node_id: this.nodeId, rejoined: !joined }, 'joined the ring');
    this.timer = setInterval(() => {
      this.registry.heartbeat(this.nodeId, this.ttlMs).catch((err: unknown) => {
        if (!this.closed) this.logger.warn({ err, node_id: this.nodeId }, 'heartbeat failed');
      });
    }, Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.registry.leave(this.nodeId);
    this.logger.info({ node_id: this.nodeId }, 'left the ring');
  }
}
