#include "textflag.h"

// madd6x16 is the AVX2 micro-kernel of nn/intgemm.go: a 6x16 tile of
// int16 x int16 products, VPMADDWD pairs summed in int32 for at most kb
// k-pairs, then sign-extended to int64, shifted left by shift and added to
// the int64 tile c (row stride ldc elements). intPlan proves that no int32
// sum can overflow: 2*kb*maxA*maxB <= 2^31-1.
//
// a: k2 pairs x 6 rows x 2 int16 (24 bytes a pair).
// b: k2 pairs x 16 columns x 2 int16 (64 bytes a pair).
//
// Registers: Y0..Y11 the int32 accumulators (row r: Y(2r) columns 0-7,
// Y(2r+1) columns 8-15), Y12/Y13 the B pair, Y14 the broadcast A pair,
// Y15 the product. At a flush X12 holds the shift and Y13..Y15 are
// scratch.

#define MADDROW(off, acc0, acc1) \
	VPBROADCASTD off(AX), Y14; \
	VPMADDWD     Y12, Y14, Y15; \
	VPADDD       Y15, acc0, acc0; \
	VPMADDWD     Y13, Y14, Y15; \
	VPADDD       Y15, acc1, acc1

#define FLUSH(xacc, yacc, off) \
	VEXTRACTI128 $1, yacc, X15; \
	VPMOVSXDQ    xacc, Y14; \
	VPMOVSXDQ    X15, Y15; \
	VPSLLQ       X12, Y14, Y14; \
	VPSLLQ       X12, Y15, Y15; \
	VPADDQ       off(R10), Y14, Y14; \
	VPADDQ       off+32(R10), Y15, Y15; \
	VMOVDQU      Y14, off(R10); \
	VMOVDQU      Y15, off+32(R10); \
	VPXOR        yacc, yacc, yacc

// func madd6x16(a *int16, b *int16, c *int64, ldc, k2, kb int, shift uint64)
TEXT ·madd6x16(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), AX
	MOVQ b+8(FP), BX
	MOVQ c+16(FP), DI
	MOVQ ldc+24(FP), SI
	SHLQ $3, SI
	MOVQ k2+32(FP), CX
	MOVQ kb+40(FP), DX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11

block:
	TESTQ CX, CX
	JLE   done
	MOVQ  DX, R8
	CMPQ  R8, CX
	CMOVQGT CX, R8
	SUBQ  R8, CX

loop:
	VMOVDQU (BX), Y12
	VMOVDQU 32(BX), Y13
	MADDROW(0, Y0, Y1)
	MADDROW(4, Y2, Y3)
	MADDROW(8, Y4, Y5)
	MADDROW(12, Y6, Y7)
	MADDROW(16, Y8, Y9)
	MADDROW(20, Y10, Y11)
	ADDQ $24, AX
	ADDQ $64, BX
	DECQ R8
	JNZ  loop

	MOVQ shift+48(FP), R9
	VMOVQ R9, X12
	MOVQ DI, R10
	FLUSH(X0, Y0, 0)
	FLUSH(X1, Y1, 64)
	ADDQ SI, R10
	FLUSH(X2, Y2, 0)
	FLUSH(X3, Y3, 64)
	ADDQ SI, R10
	FLUSH(X4, Y4, 0)
	FLUSH(X5, Y5, 64)
	ADDQ SI, R10
	FLUSH(X6, Y6, 0)
	FLUSH(X7, Y7, 64)
	ADDQ SI, R10
	FLUSH(X8, Y8, 0)
	FLUSH(X9, Y9, 64)
	ADDQ SI, R10
	FLUSH(X10, Y10, 0)
	FLUSH(X11, Y11, 64)
	JMP  block

done:
	VZEROUPPER
	RET
