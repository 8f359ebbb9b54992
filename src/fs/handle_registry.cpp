// The handle registry (open files and directories by fuse_file_info::fh) and the count of
// outstanding client calls that keeps the filesystem alive while a callback may still run.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

void Filesystem::Impl::wait_for_calls() {
  std::unique_lock lock(calls_mutex);
  if (calls != 0) LOG_DEBUG("waiting for %llu outstanding requests", static_cast<unsigned long long>(calls));
  calls_cv.wait(lock, [&] { return calls == 0; });
}

bool Filesystem::Impl::wait_for_calls_until(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(calls_mutex);
  return calls_cv.wait_until(lock, deadline, [&] { return calls == 0; });
}

void Filesystem::Impl::finish_calls() {
  stopping = true;
  // Writes of files just closed may still be going out: let them finish while the server answers.
  const auto grace = client->alive() ? kUnmountGraceConnected : kUnmountGraceDisconnected;
  if (!wait_for_calls_until(std::chrono::steady_clock::now() + grace))
    LOG_WARN("unmounting with requests still outstanding; they fail now");
  client->shutdown();
  wait_for_calls();
}

uint64_t Filesystem::Impl::register_handle(std::shared_ptr<HandleBase> h, Ino ino) {
  HandleBase* raw = h.get();
  std::lock_guard lock(handles_mutex);
  if (!h->is_dir) open_files[ino].push_back(std::static_pointer_cast<FileHandle>(h));
  handles.emplace(raw, std::move(h));
  return reinterpret_cast<uint64_t>(raw);
}

std::shared_ptr<HandleBase> Filesystem::Impl::unregister_handle(uint64_t fh) {
  std::lock_guard lock(handles_mutex);
  auto it = handles.find(reinterpret_cast<HandleBase*>(fh));
  if (it == handles.end()) return nullptr;
  auto h = std::move(it->second);
  handles.erase(it);
  if (!h->is_dir) {
    auto f = std::static_pointer_cast<FileHandle>(h);
    auto o = open_files.find(f->ino);
    if (o != open_files.end()) {
      auto& v = o->second;
      v.erase(std::remove_if(v.begin(), v.end(), [&](const std::weak_ptr<FileHandle>& w) {
                auto s = w.lock();
                return !s || s == f;
              }), v.end());
      if (v.empty()) open_files.erase(o);
    }
  }
  return h;
}

std::shared_ptr<FileHandle> Filesystem::Impl::file_handle(const fuse_file_info* fi) {
  if (!fi) return nullptr;
  std::lock_guard lock(handles_mutex);
  auto it = handles.find(reinterpret_cast<HandleBase*>(fi->fh));
  if (it == handles.end() || it->second->is_dir) return nullptr;
  return std::static_pointer_cast<FileHandle>(it->second);
}

std::shared_ptr<DirHandle> Filesystem::Impl::dir_handle(const fuse_file_info* fi) {
  if (!fi) return nullptr;
  std::lock_guard lock(handles_mutex);
  auto it = handles.find(reinterpret_cast<HandleBase*>(fi->fh));
  if (it == handles.end() || !it->second->is_dir) return nullptr;
  return std::static_pointer_cast<DirHandle>(it->second);
}

std::vector<std::shared_ptr<FileHandle>> Filesystem::Impl::files_of(Ino ino) {
  std::vector<std::shared_ptr<FileHandle>> out;
  std::lock_guard lock(handles_mutex);
  auto it = open_files.find(ino);
  if (it == open_files.end()) return out;
  for (auto& w : it->second) {
    if (auto s = w.lock()) out.push_back(std::move(s));
  }
  return out;
}

void Filesystem::Impl::close_quietly(const client::FileRef& file) {
  if (!file) return;
  client->close(file, tracked([path = file->path()](Status s) {
    if (!s) LOG_DEBUG("close of %s failed: %s", path.c_str(), s.error().message.c_str());
  }));
}

}  // namespace sftpfs::fs
