;; Holds what the client sends (pauses) until 10 bytes or more are there, then replaces
;; them all with `whole`: what goes upstream is only ever the whole message, rewritten.
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (data (i32.const 0) "whole")
  (func (export "proxy_on_new_connection") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32) (param $size i32) (param i32) (result i32)
    (if (i32.lt_u (local.get $size) (i32.const 10)) (then (return (i32.const 1))))
    (drop (call $set (i32.const 2) (i32.const 0) (local.get $size) (i32.const 0) (i32.const 5)))
    (i32.const 0))
)
