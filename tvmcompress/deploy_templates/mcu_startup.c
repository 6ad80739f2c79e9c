/* Bare-metal start-up and host I/O for the firmware of an AOT model on an Arm Cortex-M board under
 * qemu-system-arm (tvmcompress export --aot --board). No OS, no heap, no C library start-up code.
 *
 * Host I/O is Arm semihosting (a `bkpt 0xAB` that the debugger, here qemu with -semihosting, serves):
 * open/read/write/close a file on the host, print a string, exit with a status. */
#include <stdint.h>
#include <string.h>

#include "mcu_startup.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_limit, __stack_top;
int main(void);

/* ---- semihosting ------------------------------------------------------------------------------------------ */

static int semihost(int op, void* arg) {
  register int r0 __asm__("r0") = op;
  register void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

int host_open(const char* path, int write) {
  uint32_t args[3] = {(uint32_t)path, write ? 6u : 1u /* "wb" : "rb" */, (uint32_t)strlen(path)};
  return semihost(0x01, args);
}

int host_read(int handle, void* data, uint32_t size) {
  uint32_t args[3] = {(uint32_t)handle, (uint32_t)data, size};
  return semihost(0x06, args); /* the number of bytes NOT read */
}

int host_length(int handle) {
  uint32_t args[1] = {(uint32_t)handle};
  return semihost(0x0C, args);
}

int host_write(int handle, const void* data, uint32_t size) {
  uint32_t args[3] = {(uint32_t)handle, (uint32_t)data, size};
  return semihost(0x05, args); /* the number of bytes NOT written */
}

void host_close(int handle) {
  uint32_t args[1] = {(uint32_t)handle};
  semihost(0x02, args);
}

void host_print(const char* text) { semihost(0x04, (void*)text); }

void host_print_number(const char* label, uint32_t value) {
  char line[64];
  size_t used = strlen(label);
  if (used > 40) used = 40;
  memcpy(line, label, used);
  char digits[12];
  int count = 0;
  do {
    digits[count++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (count > 0) line[used++] = digits[--count];
  line[used++] = '\n';
  line[used] = '\0';
  host_print(line);
}

void host_exit(int status) {
  /* SYS_EXIT with ADP_Stopped_ApplicationExit (qemu exits 0) or RunTimeErrorUnknown (qemu exits 1). */
  semihost(0x18, (void*)(status == 0 ? 0x20026u : 0x20023u));
  for (;;) {
  }
}

/* ---- stack high-water mark -------------------------------------------------------------------------------- */

#define STACK_PAINT 0xA5A5A5A5u

void stack_paint(void) {
  uintptr_t sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  /* Everything below the current stack pointer (minus a margin for this function's own frame) is unused. */
  for (uint32_t* p = &__stack_limit; (uintptr_t)p < sp - 64; ++p) *p = STACK_PAINT;
}

uint32_t stack_used(void) {
  const uint32_t* p = &__stack_limit;
  while (p < &__stack_top && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&__stack_top - (uintptr_t)p);
}

/* ---- reset ------------------------------------------------------------------------------------------------ */

void tvmc_reset(void) {
#if defined(__ARM_FP)
  /* Enable the FPU (CP10, CP11 full access) before any float instruction runs. */
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20;
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  memcpy(&__data_start, &__data_load, (size_t)((uintptr_t)&__data_end - (uintptr_t)&__data_start));
  memset(&__bss_start, 0, (size_t)((uintptr_t)&__bss_end - (uintptr_t)&__bss_start));
  host_exit(main());
}

static void tvmc_fault(void) {
  host_print("fault: the firmware crashed (HardFault)\n");
  host_exit(1);
}

/* The vector table: initial stack pointer, reset, NMI, HardFault, and the other system exceptions. */
__attribute__((section(".vectors"), used)) static void* const vectors[16] = {
    &__stack_top, (void*)tvmc_reset, (void*)tvmc_fault, (void*)tvmc_fault, (void*)tvmc_fault,
    (void*)tvmc_fault, (void*)tvmc_fault,
};
