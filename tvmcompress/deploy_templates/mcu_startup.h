/* Host I/O (Arm semihosting) and stack measurement of the bare-metal firmware: see mcu_startup.c. */
#ifndef TVMCOMPRESS_MCU_STARTUP_H_
#define TVMCOMPRESS_MCU_STARTUP_H_

#include <stdint.h>

int host_open(const char* path, int write);
int host_read(int handle, void* data, uint32_t size);
int host_length(int handle);
int host_write(int handle, const void* data, uint32_t size);
void host_close(int handle);
void host_print(const char* text);
void host_print_number(const char* label, uint32_t value);
void host_exit(int status);
void stack_paint(void);
uint32_t stack_used(void);

#endif /* TVMCOMPRESS_MCU_STARTUP_H_ */
