// The FUSE filesystem: construction, the init handshake, mount, serve() and the table of C callbacks
// that dispatch kernel requests to Filesystem::Impl (see filesystem_impl.hpp for where each operation
// lives).
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

namespace {

std::string escape_option(const std::string& value) {
  // libfuse's option parser splits on ',' and takes '\' as an escape.
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

void Filesystem::Impl::init(fuse_conn_info* conn) {
  auto want = [&](unsigned cap, bool on, const char* why) {
    if (on && (conn->capable & cap)) {
      conn->want |= cap;
    } else {
      conn->want &= ~cap;
    }
    LOG_DEBUG("fuse capability %s: %s", why, (conn->want & cap) ? "on" : "off");
  };
  // Several reads of one file in flight at once: the kernel's readahead overlaps round trips.
  want(FUSE_CAP_ASYNC_READ, true, "async_read");
  // O_TRUNC goes with the OPEN (one request) instead of a separate truncating SETSTAT.
  want(FUSE_CAP_ATOMIC_O_TRUNC, true, "atomic_o_trunc");
  // One READDIR reply fills the kernel's dentries and attributes (ls -l, find: no LSTAT per entry).
  // "auto" lets the kernel fall back to plain readdir when the application does not stat entries.
  want(FUSE_CAP_READDIRPLUS, true, "readdirplus");
  want(FUSE_CAP_READDIRPLUS_AUTO, true, "readdirplus_auto");
  // Lookups and readdirs in one directory run concurrently: each is only a request to the server.
  want(FUSE_CAP_PARALLEL_DIROPS, true, "parallel_dirops");
  // A changed mtime/size seen in attributes drops stale cached pages (other writers on the server).
  // kernel_cache promises the files never change elsewhere, so it turns this off.
  want(FUSE_CAP_AUTO_INVAL_DATA, !opt.kernel_cache, "auto_inval_data");
  // Off: with the writeback cache the kernel decides sizes and mtimes and sends writes long after
  // write() returned, so a server-side error (disk full, quota) could not reach close() and appends
  // would go where the kernel's possibly stale size says; our own write-behind gives the speed
  // without giving that up.
  want(FUSE_CAP_WRITEBACK_CACHE, false, "writeback_cache");
  // Off: symlink targets cached in the page cache are only dropped when the inode goes; a target
  // changed on the server would stay stale. READLINK is one cheap request.
  want(FUSE_CAP_CACHE_SYMLINKS, false, "cache_symlinks");
  // Off: we take no part in locking (SFTP v3 has none); the kernel keeps locks local.
  want(FUSE_CAP_POSIX_LOCKS, false, "posix_locks");
  want(FUSE_CAP_FLOCK_LOCKS, false, "flock_locks");
  // Off: we reply from memory buffers; splicing would not save a copy.
  want(FUSE_CAP_SPLICE_READ, false, "splice_read");
  want(FUSE_CAP_SPLICE_WRITE, false, "splice_write");
  want(FUSE_CAP_SPLICE_MOVE, false, "splice_move");

  // Large requests: fewer kernel round trips; the client splits them into pipelined SFTP requests.
  conn->max_write = kMaxWrite;
  // max_readahead stays what the kernel offered: it can only lower it (read prefetching is ours).
  if (opt.max_read != 0) conn->max_read = opt.max_read;
  // The kernel's default of 12 background requests caps parallel reads (fio iodepth 16 acts like 10
  // on sshfs); each request costs us only a pending SFTP request.
  conn->max_background = 128;
  conn->congestion_threshold = 96;
  // SFTP v3 times are whole seconds.
  conn->time_gran = 1000000000;

}

// ================= C callbacks: no exception crosses them =================

namespace {

Filesystem::Impl* impl_of(fuse_req_t req) { return static_cast<Filesystem::Impl*>(fuse_req_userdata(req)); }

template <class F>
void guarded(fuse_req_t req, F&& f) {
  try {
    f(impl_of(req));
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    LOG_ERROR("internal error: %s", e.what());
    fuse_reply_err(req, EIO);
  }
}

void op_init(void* userdata, fuse_conn_info* conn) { static_cast<Filesystem::Impl*>(userdata)->init(conn); }
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->lookup(req, parent, name); });
}
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  try {
    impl_of(req)->forget(ino, nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  try {
    for (size_t i = 0; i < count; ++i) impl_of(req)->forget(forgets[i].ino, forgets[i].nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->getattr(req, ino, fi); });
}
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->setattr(req, ino, attr, to_set, fi); });
}
void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  guarded(req, [&](auto* fs) { fs->access(req, ino, mask); });
}
void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&](auto* fs) { fs->readlink(req, ino); });
}
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, [&](auto* fs) { fs->mknod(req, parent, name, mode, rdev); });
}
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, [&](auto* fs) { fs->mkdir(req, parent, name, mode); });
}
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->unlink(req, parent, name); });
}
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->rmdir(req, parent, name); });
}
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->symlink(req, link, parent, name); });
}
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  guarded(req, [&](auto* fs) { fs->rename(req, parent, name, newparent, newname, flags); });
}
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guarded(req, [&](auto* fs) { fs->link(req, ino, newparent, newname); });
}
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->open(req, ino, fi); });
}
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->read(req, ino, size, off, fi); });
}
void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->write(req, ino, buf, size, off, fi); });
}
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->flush(req, ino, fi); });
}
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->release(req, ino, fi); });
}
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->fsync(req, ino, datasync, fi); });
}
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->opendir(req, ino, fi); });
}
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->readdir(req, ino, size, off, fi, false); });
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->readdir(req, ino, size, off, fi, true); });
}
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->releasedir(req, ino, fi); });
}
void op_fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  fuse_reply_err(req, 0);  // directory changes are made by the server as they happen
}
void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&](auto* fs) { fs->statfs(req, ino); });
}
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->create(req, parent, name, mode, fi); });
}
void op_copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                        off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  guarded(req, [&](auto* fs) { fs->copy_file_range(req, fi_in, off_in, fi_out, off_out, len, flags); });
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.access = op_access;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.create = op_create;
  ops.copy_file_range = op_copy_file_range;
  return ops;
}

const fuse_lowlevel_ops kOps = make_ops();

}  // namespace

// ================= Filesystem =================

std::unique_ptr<Filesystem> Filesystem::create(std::shared_ptr<client::Client> client, FsOptions options) {
  return std::unique_ptr<Filesystem>(new Filesystem(std::make_unique<Impl>(std::move(client), std::move(options))));
}

Filesystem::Filesystem(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Filesystem::~Filesystem() {
  if (!impl_) return;
  auto& fs = *impl_;
  if (fs.session) {
    if (fs.signals_set) fuse_remove_signal_handlers(fs.session);
    if (fs.mounted) fuse_session_unmount(fs.session);
    fs.mounted = false;
  }
  // Callbacks still in flight reference the Impl (and may reply through the session).
  fs.finish_calls();
  if (fs.session) fuse_session_destroy(fs.session);
  fs.session = nullptr;
}

namespace {

Status check_mountpoint(const std::string& mountpoint) {
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOTCONN) {
      return Error::errno_error(err, "mount point " + mountpoint +
                                         " is a disconnected FUSE mount: run 'fusermount3 -u " + mountpoint + "' first");
    }
    if (err == ENOENT) return Error::errno_error(err, "mount point " + mountpoint + " does not exist: create it first");
    return Error::errno_error(err, "mount point " + mountpoint + ": " + std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode)) return Error::errno_error(ENOTDIR, "mount point " + mountpoint + " is not a directory");
  std::string parent = mountpoint + "/..";
  struct stat pst {};
  if (::stat(parent.c_str(), &pst) == 0 && pst.st_dev != st.st_dev && pst.st_ino != st.st_ino) {
    return Error::errno_error(EBUSY, "mount point " + mountpoint + " is already a mount point: unmount it first");
  }
  if (::access(mountpoint.c_str(), W_OK) != 0 && geteuid() != 0) {
    return Error::errno_error(EACCES, "mount point " + mountpoint + " is not writable by you");
  }
  return {};
}

}  // namespace

Status Filesystem::mount(const std::string& mountpoint) {
  auto& fs = *impl_;
  if (fs.session) return Error::errno_error(EBUSY, "already mounted");
  if (auto ok = check_mountpoint(mountpoint); !ok) return ok;

  std::string options = "subtype=" + escape_option(fs.opt.subtype.empty() ? "sftpfs" : fs.opt.subtype);
  if (!fs.opt.fsname.empty()) options += ",fsname=" + escape_option(fs.opt.fsname);
  if (fs.opt.allow_other) options += ",allow_other";
  if (fs.opt.allow_root) options += ",allow_root";
  if (fs.opt.default_permissions) options += ",default_permissions";
  if (fs.opt.max_read != 0) options += ",max_read=" + std::to_string(fs.opt.max_read);
  for (const auto& extra : fs.opt.extra_fuse_options) options += "," + extra;

  std::vector<std::string> argv_storage = {"sftpfs", "-o", options};
  if (fs.opt.debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_storage) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fs.session = fuse_session_new(&args, &kOps, sizeof kOps, &fs);
  fuse_opt_free_args(&args);
  if (!fs.session) return Error::errno_error(EINVAL, "cannot create the FUSE session (bad FUSE options: " + options + ")");
  if (fuse_session_mount(fs.session, mountpoint.c_str()) != 0) {
    fuse_session_destroy(fs.session);
    fs.session = nullptr;
    return Error::errno_error(EPERM, "cannot mount on " + mountpoint +
                                         " (is /dev/fuse usable and fusermount3 installed? allow_other needs "
                                         "user_allow_other in /etc/fuse.conf)");
  }
  fs.mounted = true;
  fs.mountpoint = mountpoint;
  LOG_INFO("mounted %s on %s", fs.opt.remote_root.c_str(), mountpoint.c_str());
  return {};
}

int Filesystem::serve() {
  auto& fs = *impl_;
  if (!fs.session) return 1;
  if (fuse_set_signal_handlers(fs.session) == 0) fs.signals_set = true;
  int rc;
  if (fs.opt.single_threaded) {
    rc = fuse_session_loop(fs.session);
  } else {
    fuse_loop_config config{};
    config.clone_fd = 0;
    config.max_idle_threads = 10;  // threads only dispatch; a few idle ones absorb bursts
    rc = fuse_session_loop_mt(fs.session, &config);
  }
  if (fs.signals_set) {
    fuse_remove_signal_handlers(fs.session);
    fs.signals_set = false;
  }
  fuse_session_unmount(fs.session);
  fs.mounted = false;
  fs.finish_calls();
  LOG_INFO("unmounted %s", fs.mountpoint.c_str());
  return rc == 0 ? 0 : 1;
}

}  // namespace sftpfs::fs

