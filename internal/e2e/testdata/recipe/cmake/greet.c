#include <stdio.h>

void greet(void)
{
	unsigned int one = 1;
	printf("hello from a %s-endian machine\n", *(unsigned char *)&one == 1 ? "little" : "big");
}
