"""The seed's own queue class as a legacy consumer beside the fleet.

Usage: seed_consumer.py REDIS_URL KEY_PREFIX N
Enqueues N tasks the seed's way, then runs the seed's dequeue/complete loop until
`agent_tasks` stays empty for a second; prints one JSON line: {"enqueued": [...],
"consumed": [...]}. The class below is copied verbatim from the seed
(../shared/seed/horizontal-scalability-guide.md); only its key names get the test's prefix.
"""
import json
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Dict, Optional

import redis


class DistributedTaskQueue:
    """Distributed task queue for agent processing"""
    
    def __init__(self, redis_url: str):
        self.redis_client = redis.from_url(redis_url)
        self.task_queue = "agent_tasks"
        self.processing_queue = "processing_tasks"
        self.completed_queue = "completed_tasks"
        self.failed_queue = "failed_tasks"
    
    def enqueue_task(self, task_data: Dict[str, Any], priority: int = 5) -> str:
        """Add task to distributed queue with priority"""
        task_id = str(uuid.uuid4())
        
        task = {
            'id': task_id,
            'data': task_data,
            'priority': priority,
            'created_at': datetime.utcnow().isoformat(),
            'attempts': 0,
            'max_attempts': 3
        }
        
        # Use sorted set for priority queue
        self.redis_client.zadd(
            self.task_queue, 
            {json.dumps(task): priority}
        )
        
        return task_id
    
    def dequeue_task(self, worker_id: str) -> Optional[Dict[str, Any]]:
        """Get next task for processing"""
        # Get highest priority task
        task_data = self.redis_client.zpopmax(self.task_queue, 1)
        
        if not task_data:
            return None
        
        task_json, priority = task_data[0]
        task = json.loads(task_json)
        
        # Move to processing queue with worker assignment
        task['worker_id'] = worker_id
        task['processing_started'] = datetime.utcnow().isoformat()
        
        self.redis_client.hset(
            self.processing_queue, 
            task['id'], 
            json.dumps(task)
        )
        
        return task
    
    def complete_task(self, task_id: str, result: Dict[str, Any]):
        """Mark task as completed"""
        task_json = self.redis_client.hget(self.processing_queue, task_id)
        
        if task_json:
            task = json.loads(task_json)
            task['result'] = result
            task['completed_at'] = datetime.utcnow().isoformat()
            
            # Move to completed queue
            self.redis_client.hset(
                self.completed_queue, 
                task_id, 
                json.dumps(task)
            )
            
            # Remove from processing
            self.redis_client.hdel(self.processing_queue, task_id)
    
    def fail_task(self, task_id: str, error: str):
        """Handle task failure with retry logic"""
        task_json = self.redis_client.hget(self.processing_queue, task_id)
        
        if task_json:
            task = json.loads(task_json)
            task['attempts'] += 1
            task['last_error'] = error
            task['failed_at'] = datetime.utcnow().isoformat()
            
            if task['attempts'] < task['max_attempts']:
                # Retry with exponential backoff
                delay = 2 ** task['attempts']  # 2, 4, 8 seconds
                retry_time = datetime.utcnow() + timedelta(seconds=delay)
                
                # Re-queue for retry
                self.redis_client.zadd(
                    self.task_queue, 
                    {json.dumps(task): task['priority']}
                )
            else:
                # Move to failed queue
                self.redis_client.hset(
                    self.failed_queue, 
                    task_id, 
                    json.dumps(task)
                )
            
            # Remove from processing
            self.redis_client.hdel(self.processing_queue, task_id)


def main():
    url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queue = DistributedTaskQueue(url)
    queue.task_queue = prefix + "agent_tasks"
    queue.processing_queue = prefix + "processing_tasks"
    queue.completed_queue = prefix + "completed_tasks"
    queue.failed_queue = prefix + "failed_tasks"
    enqueued = [
        queue.enqueue_task({"agent_type": "echo", "data": {"i": i}}, priority=i % 10)
        for i in range(n)
    ]
    consumed = []
    idle_since = None
    while True:
        task = queue.dequeue_task("legacy-consumer")
        if task is None:
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 1.0:
                break
            time.sleep(0.005)
            continue
        idle_since = None
        time.sleep(0.002)  # the work
        queue.complete_task(task["id"], {"done_by": "legacy"})
        consumed.append(task["id"])
    print(json.dumps({"enqueued": enqueued, "consumed": consumed}))


if __name__ == "__main__":
    main()
