// BullMQ peer worker: concurrency 50, a no-op processor, BullMQ's defaults
// otherwise. Run by bench/peers/bullmq.sh with REDIS_PORT set.
import { Worker } from 'bullmq';

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT ?? 6379) };
const worker = new Worker('bench', async () => null, { connection, concurrency: 50 });
await worker.waitUntilReady();
process.stderr.write('bullmq worker ready\n');
const stop = async () => { await worker.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
