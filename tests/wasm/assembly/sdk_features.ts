// Our own filter on the AssemblyScript SDK (root id "sdk_features"), for the SDK's calls
// the published example does not make: a counter, header get/replace/remove, a property,
// a local response, and a request paused until the root context's tick resumes it.
// Request header `x-action`: `deny` answers 401 itself, `pause` waits for a tick.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  Counter,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  HeaderPair,
  RootContext,
  continue_request,
  proxy_set_effective_context,
  registerRootContext,
  send_local_response,
  stream_context,
} from "@solo-io/proxy-runtime";
import { get_property, set_tick_period_milliseconds } from "@solo-io/proxy-runtime/runtime";

class FeaturesRoot extends RootContext {
  requests: Counter = new Counter("as_requests");
  paused: u32 = 0;

  createContext(context_id: u32): Context {
    return new Features(context_id, this);
  }

  onStart(vm_configuration_size: usize): bool {
    set_tick_period_milliseconds(10);
    return true;
  }

  onTick(): void {
    if (this.paused != 0) {
      proxy_set_effective_context(this.paused);
      stream_context.headers.request.add("x-resumed", "by tick");
      continue_request();
      this.paused = 0;
    }
  }
}

class Features extends Context {
  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as FeaturesRoot;
    root.requests.increment(1);
    const action = stream_context.headers.request.get("x-action");
    if (action == "deny") {
      const headers = new Array<HeaderPair>();
      headers.push(new HeaderPair(String.UTF8.encode("x-denied-by"), String.UTF8.encode("assemblyscript")));
      send_local_response(401, "as_denied", String.UTF8.encode("denied"), headers, GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    if (action == "pause") {
      root.paused = this.context_id;
      return FilterHeadersStatusValues.StopIteration;
    }
    stream_context.headers.request.replace("x-path", String.UTF8.decode(get_property("request.path")));
    stream_context.headers.request.remove("x-remove");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => {
  return new FeaturesRoot(context_id);
}, "sdk_features");
