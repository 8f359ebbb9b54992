#pragma once
#include <future>

namespace sftpfs::client {

template <class T, class Start>
Result<T> wait_for(Start&& start) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  start([promise](Result<T> r) { promise->set_value(std::move(r)); });
  return future.get();
}

}  // namespace sftpfs::client
