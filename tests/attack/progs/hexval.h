/* One hex digit's value, -1 for anything else: the attack programs take frames and messages as
 * hex on their command line. */
#ifndef CML_ATTACK_HEXVAL_H
#define CML_ATTACK_HEXVAL_H

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
