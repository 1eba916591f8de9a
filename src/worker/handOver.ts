import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { MembershipRegistry } from '../membership/registry.js';
import type { RingView } from '../membership/ringView.js';
import type { JobPlacer } from '../queue/jobPlacer.js';
import { nodeQueueName, taskRingKey, type TaskId } from '../queue/names.js';

export interface HandOverDeps {
  registry: MembershipRegistry;
  ringView: RingView;
  placer: JobPlacer;
  clock: Clock;
  log: Logger;
  nodeId: string;
}

/** Owners tried before a worker keeps the task itself (each try follows a fresh ring). */
const ATTEMPTS = 3;

/**
 * Put a task's next run in the queue of its owner on the ring, when that is another node.
 * Returns the node it went to, or undefined when this node should keep it (it owns the task, or
 * no other live owner could be found).
 *
 * Our view of the ring may be up to a poll interval old, so the owner may already have expired
 * and the planner drained its queue: a job written there afterwards would sit where no worker
 * takes it and no planner pass looks. So the queue is registered before the write (the planner
 * drains registered queues of gone nodes) and the owner's liveness is read after it, from Redis,
 * where expiry is decided. Live then: any drain of its queue comes later and sees our job. Gone:
 * the job is taken back and the queue registered once more, last, so that whatever our write
 * left behind is drained too (the planner unregisters a queue before it drains it), and the next
 * owner is tried.
 */
export async function handOver(deps: HandOverDeps, task: TaskId, dueAt: number): Promise<string | undefined> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const owner = deps.ringView.ownerOf(taskRingKey(task));
    if (owner === undefined || owner === deps.nodeId) return undefined;
    const queue = nodeQueueName(owner);
    await deps.registry.registerNodeQueue(queue);
    await deps.placer.ensure(queue, task, dueAt, deps.clock.now());
    if ((await deps.registry.live()).includes(owner)) return owner;
    deps.log.info({ task, owner }, 'the owner left while its next run was handed to it; taking it back');
    await deps.placer.remove(queue, task);
    await deps.registry.registerNodeQueue(queue);
    await deps.ringView.refresh();
  }
  return undefined;
}
