#include <stdio.h>
/* A kernel header, as real code includes: the musl target must have them. */
#include <linux/limits.h>

void greet(void)
{
	unsigned int one = 1;
	printf("hello from a %s-endian machine (PATH_MAX %d)\n", *(unsigned char *)&one == 1 ? "little" : "big", PATH_MAX);
}
