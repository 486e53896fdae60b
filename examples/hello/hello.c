#include <stdio.h>

#ifndef GREETING
#define GREETING "hello from kiln"
#endif

int main(void) {
	unsigned int probe = 1;
	const char *order = *(unsigned char *)&probe ? "little-endian" : "big-endian";
	printf("%s (%s, %zu-bit pointers)\n", GREETING, order, sizeof(void *) * 8);
	return 0;
}
