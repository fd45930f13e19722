#include "server/codec/parallel_encoder.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "server/codec/codec_internal.h"

namespace persistd {
namespace codec_internal {
namespace {

// A block together with its progress through the workers.
struct Slot {
  std::unique_ptr<Block> block;
  absl::Status status;  // written by the worker before `done`
  bool done = false;    // guarded by the pipeline's mutex
};

// BlockPipeline runs BlockCodec::CompressBlock on worker threads and gives
// the blocks back in submission order.
//
// Thread safety: Submit, TakeOldest and in_flight are called by the owner
// thread only; the workers are internal.
//
// Invariants: every slot in order_ is in pending_ (not started), held by
// exactly one worker, or done; slots leave order_ only through TakeOldest,
// oldest first. A worker touches a slot only between taking it from
// pending_ and setting done.
class BlockPipeline {
 public:
  BlockPipeline(int threads, BlockCodec* codec) : codec_(codec) {
    workers_.reserve(threads);
    for (int i = 0; i < threads; ++i) {
      workers_.emplace_back([this, i] { WorkerLoop(i); });
    }
  }

  // Lets running blocks finish, drops pending ones and joins the workers.
  ~BlockPipeline() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  BlockPipeline(const BlockPipeline&) = delete;
  BlockPipeline& operator=(const BlockPipeline&) = delete;

  void Submit(std::unique_ptr<Block> block) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      order_.push_back(std::make_unique<Slot>());
      order_.back()->block = std::move(block);
      pending_.push_back(order_.back().get());
    }
    work_cv_.notify_one();
  }

  // Waits until the oldest block is compressed and returns it, or the
  // error compressing it. REQUIRES: in_flight() > 0.
  absl::Status TakeOldest(std::unique_ptr<Block>* block) {
    std::unique_ptr<Slot> slot;
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return order_.front()->done; });
      slot = std::move(order_.front());
      order_.pop_front();
    }
    *block = std::move(slot->block);
    return slot->status;
  }

  size_t in_flight() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_.size();
  }

 private:
  void WorkerLoop(int worker) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      work_cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      Slot* slot = pending_.front();
      pending_.pop_front();
      lock.unlock();
      absl::Status status = codec_->CompressBlock(worker, slot->block.get());
      lock.lock();
      slot->status = std::move(status);
      slot->done = true;
      // Only the owner waits on done_cv_, for the oldest block.
      if (slot == order_.front().get()) done_cv_.notify_one();
    }
  }

  BlockCodec* const codec_;
  std::mutex mu_;
  std::condition_variable work_cv_;  // pending_ grew, or stopping_ was set
  std::condition_variable done_cv_;  // the oldest block is done
  std::deque<std::unique_ptr<Slot>> order_ ABSL_GUARDED_BY(mu_);
  std::deque<Slot*> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// Cuts the stream into blocks for a BlockPipeline (or, with threads 0, for
// the codec on the calling thread) and writes the results.
//
// Invariants: current_ is never null and holds at most block_size_ bytes of
// data; the header is written before any block; blocks are written in
// stream order; at most max_in_flight_ blocks are in the pipeline, which
// is null exactly when threads is 0.
class ParallelEncoder : public Encoder {
 public:
  ParallelEncoder(std::unique_ptr<BlockCodec> codec, int threads,
                  size_t block_size, size_t history_size, ByteSink* out)
      : Encoder(out),
        codec_(std::move(codec)),
        block_size_(block_size),
        history_size_(history_size),
        max_in_flight_(2 * static_cast<size_t>(threads)),
        current_(NewBlock()),
        pipeline_(threads > 0
                      ? std::make_unique<BlockPipeline>(threads, codec_.get())
                      : nullptr) {}

 private:
  absl::Status Compress(absl::string_view data) override {
    while (!data.empty()) {
      if (current_->data.size() == block_size_) {
        absl::Status status = Dispatch(/*last=*/false);
        if (!status.ok()) return status;
      }
      size_t n = std::min(data.size(), block_size_ - current_->data.size());
      current_->data.append(data.data(), n);
      data.remove_prefix(n);
    }
    return absl::OkStatus();
  }

  absl::Status End() override {
    absl::Status status = Dispatch(/*last=*/true);
    while (status.ok() && pipeline_ != nullptr && pipeline_->in_flight() > 0) {
      status = WriteOldest();
    }
    if (!status.ok()) return status;
    return out()->Append(codec_->Trailer());
  }

  // Sends current_ to the workers (or compresses and writes it, without
  // workers) and starts a new block with its history.
  absl::Status Dispatch(bool last) {
    std::unique_ptr<Block> next = NewBlock();
    const std::string& data = current_->data;
    if (data.size() >= history_size_) {
      next->history.assign(data, data.size() - history_size_, history_size_);
    } else {
      const std::string& old = current_->history;
      size_t keep = std::min(old.size(), history_size_ - data.size());
      next->history.assign(old, old.size() - keep, keep);
      next->history.append(data);
    }
    current_->last = last;
    std::unique_ptr<Block> block = std::move(current_);
    current_ = std::move(next);
    if (pipeline_ == nullptr) {
      absl::Status status = codec_->CompressBlock(0, block.get());
      if (!status.ok()) return status;
      return Write(std::move(block));
    }
    pipeline_->Submit(std::move(block));
    if (pipeline_->in_flight() >= max_in_flight_) return WriteOldest();
    return absl::OkStatus();
  }

  absl::Status WriteOldest() {
    std::unique_ptr<Block> block;
    absl::Status status = pipeline_->TakeOldest(&block);
    if (!status.ok()) return status;
    return Write(std::move(block));
  }

  // Writes a compressed block (after the header, before the first one).
  absl::Status Write(std::unique_ptr<Block> block) {
    absl::Status status;
    if (!header_written_) {
      header_written_ = true;
      status = out()->Append(codec_->Header());
      if (!status.ok()) return status;
    }
    codec_->BlockWritten(*block);
    if (!block->compressed.empty()) status = out()->Append(block->compressed);
    Recycle(std::move(block));
    return status;
  }

  // Returns a block from the free list (keeping its buffers) or a new one.
  std::unique_ptr<Block> NewBlock() {
    std::unique_ptr<Block> block;
    if (free_.empty()) {
      block = std::make_unique<Block>();
      block->data.reserve(block_size_);
    } else {
      block = std::move(free_.back());
      free_.pop_back();
    }
    return block;
  }

  void Recycle(std::unique_ptr<Block> block) {
    block->history.clear();
    block->data.clear();
    block->output.clear();
    block->compressed = absl::string_view();
    block->check = 0;
    block->last = false;
    free_.push_back(std::move(block));
  }

  const std::unique_ptr<BlockCodec> codec_;
  const size_t block_size_;
  const size_t history_size_;
  const size_t max_in_flight_;
  // free_ precedes current_, which the constructor makes with NewBlock().
  std::vector<std::unique_ptr<Block>> free_;
  std::unique_ptr<Block> current_;
  bool header_written_ = false;
  // Declared last: destroyed (workers joined) before the codec and blocks.
  const std::unique_ptr<BlockPipeline> pipeline_;
};

}  // namespace

std::unique_ptr<ByteSink> NewParallelEncoder(std::unique_ptr<BlockCodec> codec,
                                             int threads, size_t block_size,
                                             size_t history_size,
                                             ByteSink* out) {
  return std::make_unique<ParallelEncoder>(std::move(codec), threads,
                                           block_size, history_size, out);
}

std::unique_ptr<ByteSink> NewSerialBlockEncoder(
    std::unique_ptr<BlockCodec> codec, size_t block_size, size_t history_size,
    ByteSink* out) {
  return std::make_unique<ParallelEncoder>(std::move(codec), /*threads=*/0,
                                           block_size, history_size, out);
}

}  // namespace codec_internal
}  // namespace persistd
